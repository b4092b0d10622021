//! The one TLS provider: aws-lc-rs, the AWS SDK's own, so a bootstrap carries one crypto library.
//! reqwest and the Redis client are built without a provider of their own and take the process
//! default, installed here before any client is built.

/// Installs aws-lc-rs as the process's rustls provider (once; later calls change nothing).
pub fn install_provider() {
    // Fails only when a provider is already installed, which is the state wanted.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An HTTP client builder whose TLS uses the process's provider (aws-lc-rs).
#[cfg(any(feature = "pitr-restore", feature = "dead-letter-replay"))]
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_provider();
    reqwest::Client::builder()
}

#[cfg(all(test, any(feature = "pitr-restore", feature = "dead-letter-replay")))]
mod tests {
    #[test]
    fn clients_build_with_the_process_provider() {
        super::http_client_builder()
            .build()
            .expect("an HTTPS client");
        super::http_client_builder().build().expect("and again");
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
