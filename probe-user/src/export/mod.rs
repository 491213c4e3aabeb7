//! What leaves the daemon: the HTTP server ([`http`]), its TLS and basic-auth
//! settings ([`web_config`]), and the pages it serves ([`routes`]).
pub mod http;
pub mod routes;
pub mod web_config;
