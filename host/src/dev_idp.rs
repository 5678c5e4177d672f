//! `bazaar dev-idp`: the local OpenID Provider (`host/crates/dev-idp`) for trying social login
//! next to `bazaar up`. A development stand-in that signs anyone in: never expose or deploy it.

use clap::Args;

use bazaar_dev_idp::{Client, Config, DevIdp, User};

#[derive(Debug, Clone, Args)]
pub struct DevIdpArgs {
    /// Address to serve on; the issuer is `http://<address>`. Keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:9400")]
    pub listen: String,
    /// The client id the shop uses (its `oidc_providers` entry).
    #[arg(long, default_value = "bazaar-local")]
    pub client_id: String,
    /// The client secret the shop uses. The default is public: this provider guards nothing.
    #[arg(
        long,
        env = "BAZAAR_DEV_IDP_CLIENT_SECRET",
        default_value = "bazaar-local-secret"
    )]
    pub client_secret: String,
    /// Redirect URIs the client may use, exactly (repeatable).
    #[arg(
        long = "redirect-uri",
        default_value = "http://127.0.0.1:3000/auth/oidc/local/callback"
    )]
    pub redirect_uris: Vec<String>,
    /// The user signed in when a login has no `login_hint`.
    #[arg(long, default_value = "dev@bazaar.test")]
    pub user_email: String,
    /// That user's display name.
    #[arg(long, default_value = "Dev User")]
    pub user_name: String,
}

pub async fn run(args: DevIdpArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "dev-idp signs in anyone without a password; keep it on loopback");
    }
    let config = Config {
        clients: vec![Client {
            client_id: args.client_id.clone(),
            client_secret: args.client_secret,
            redirect_uris: args.redirect_uris.clone(),
        }],
        default_user: User {
            email: args.user_email,
            name: args.user_name,
        },
    };
    let idp = DevIdp::start(listener, config).await?;
    println!(
        "Local OpenID provider (development only) at {}",
        idp.issuer()
    );
    println!("  client_id: {}", args.client_id);
    println!("  redirect URIs: {}", args.redirect_uris.join(", "));
    println!(
        "  run the shop with --variable oidc_extra_origin={} and an oidc_providers entry \
         {{\"local\":{{\"issuer\":\"{}\",\"client_id\":\"{}\",\"client_secret\":\"…\"}}}}",
        idp.issuer(),
        idp.issuer(),
        args.client_id
    );
    let _ = tokio::signal::ctrl_c().await;
    idp.shutdown().await;
    Ok(())
}
