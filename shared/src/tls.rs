//! The one TLS provider: aws-lc-rs, the AWS SDK's own, so a bootstrap carries one crypto library.
//! reqwest is built without a provider of its own and takes the process default, installed here
//! before any HTTP client is built.

/// An HTTP client builder whose TLS uses the process's provider (aws-lc-rs).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // Fails only when a provider is already installed, which is the state wanted.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
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
