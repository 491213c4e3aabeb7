//! What leaves the daemon: the HTTP server ([`http`]) on TCP and on a Unix
//! socket ([`api_socket`]), its TLS and basic-auth settings ([`web_config`]),
//! and the pages it serves ([`routes`]).
pub mod api_socket;
pub mod http;
pub mod routes;
pub mod web_config;
