// java.net.http.HttpClient reading 100 bytes of each response and closing
// the body (tests/diagnosis.rs): args URL, count. Prints "ready" when done, then stays.
import java.net.URI;
import java.net.http.*;
import java.io.InputStream;

public class HalfRead {
    public static void main(String[] args) throws Exception {
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        int n = Integer.parseInt(args[1]);
        for (int i = 0; i < n; i++) {
            HttpRequest req = HttpRequest.newBuilder(URI.create(args[0])).build();
            HttpResponse<InputStream> resp = client.send(req, HttpResponse.BodyHandlers.ofInputStream());
            try (InputStream body = resp.body()) {
                body.read(new byte[100]);
            }
        }
        System.out.println("ready");
        Thread.sleep(60_000);
    }
}
