// gohttp: real Go net/http peers for sockprobe's tests, the way users meet
// the bugs (see ../shared/seeds): a server, and a client that either drains
// response bodies, closes them unread, or never closes them at all.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"sync"
	"time"
)

// waitFor lets a client started beside its server (a container's script)
// wait until the server listens, instead of failing its first request.
func waitFor(addr string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func main() {
	mode := flag.String("mode", "server", "server | drain | unread | leak | burst | accept-only | dial")
	listen := flag.String("listen", "127.0.0.1:0", "server: address")
	bodyBytes := flag.Int("body-bytes", 64*1024, "server: response body size")
	idle := flag.Duration("idle-timeout", 0, "server: close idle keep-alive connections after this long")
	delay := flag.Duration("delay", 0, "server: time each request takes")
	concurrency := flag.Int("concurrency", 16, "burst: concurrent requests per burst (n bursts)")
	url := flag.String("url", "", "client: URL to request")
	n := flag.Int("n", 100, "client: requests (0 = until killed)")
	interval := flag.Duration("interval", 0, "client: pause between requests")
	keepalive := flag.Duration("keepalive", 0, "client: TCP keepalive period (0: Go's default)")
	stay := flag.Bool("stay", false, "client: keep running (and holding what it holds) after the requests")
	addr := flag.String("addr", "", "dial: address to connect to and hold")
	wait := flag.Bool("wait", false, "client: first wait (up to 10 s) for the server to listen (one extra connection)")
	spread := flag.Int("spread", 0, "client: request i goes to 127.0.0.(1 + i mod spread), the URL's port (0: the URL's host)")
	flag.Parse()

	switch *mode {
	case "accept-only":
		// Accepts connections and holds them without reading: their owner
		// can only come from the listener.
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening %s\n", ln.Addr())
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			held = append(held, c)
		}
	case "dial":
		if *wait {
			waitFor(*addr)
		}
		var held []net.Conn
		for i := 0; i < *n; i++ {
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			held = append(held, c)
		}
		fmt.Println("dialed", len(held))
		select {}
	}

	if *mode == "server" {
		body := bytes.Repeat([]byte("x"), *bodyBytes)
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening %s\n", ln.Addr())
		srv := &http.Server{
			IdleTimeout: *idle,
			// A client frozen between connect() and its first request would
			// otherwise hold an established connection forever: the idle
			// timeout applies only between requests.
			ReadHeaderTimeout: *idle,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				time.Sleep(*delay)
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				w.Write(body)
			}),
		}
		srv.Serve(ln)
		return
	}

	if *mode == "burst" {
		// Drains and closes every body, but sends bursts of concurrent
		// requests through the default Transport: its idle pool keeps 2
		// connections per host (MaxIdleConnsPerHost), the rest are closed.
		if u, err := neturl.Parse(*url); err == nil && *wait {
			waitFor(u.Host)
		}
		for i := 0; i < *n; i++ {
			var wg sync.WaitGroup
			for j := 0; j < *concurrency; j++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := http.Get(*url)
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
			wg.Wait()
			time.Sleep(*interval)
		}
		fmt.Println("done", *n)
		if *stay {
			select {}
		}
		return
	}

	if u, err := neturl.Parse(*url); err == nil && *wait {
		waitFor(u.Host)
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 4}
	if *keepalive > 0 {
		transport.DialContext = (&net.Dialer{KeepAlive: *keepalive}).DialContext
	}
	client := &http.Client{Transport: transport}
	var leaked []*http.Response
	for i := 0; *n == 0 || i < *n; i++ {
		target := *url
		if u, err := neturl.Parse(*url); err == nil && *spread > 0 {
			u.Host = fmt.Sprintf("127.0.0.%d:%s", 1+i%*spread, u.Port())
			target = u.String()
		}
		var resp *http.Response
		var err error
		if *mode == "leak" {
			resp, err = client.Post(target, "text/plain", bytes.NewReader([]byte("ping")))
		} else {
			resp, err = client.Get(target)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		switch *mode {
		case "drain":
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		case "unread":
			// The seed's bug: look at the status, close the body unread.
			if resp.StatusCode != http.StatusOK {
				fmt.Fprintln(os.Stderr, "status", resp.StatusCode)
			}
			resp.Body.Close()
		case "leak":
			// Never closed: the connection cannot be reused, and once the
			// server times it out it sits in CLOSE_WAIT.
			leaked = append(leaked, resp)
		}
		time.Sleep(*interval)
	}
	fmt.Println("done", len(leaked))
	if *stay {
		select {}
	}
}
