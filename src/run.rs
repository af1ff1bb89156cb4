//! `azs-csp-operator run`: build the resolver, start the controllers, stop on SIGTERM/Ctrl-C.

use std::sync::Arc;

use kube::Client;
use tracing::{error, info};

use crate::{
    cli::{ResolverKind, RunArgs},
    conditions::SystemClock,
    controller::{self, Settings},
    resolver::{
        CatalogError, CatalogResolver, HttpResolver, HttpResolverError, HttpResolverOptions,
        MetadataResolver, watch_configmap, watch_file,
    },
};

#[derive(thiserror::Error, Debug)]
pub enum RunError {
    #[error("the catalog resolver needs --catalog-file or --catalog-configmap")]
    NoCatalogSource,
    #[error("the http resolver needs --resolver-url")]
    NoResolverUrl,
    #[error("cannot load the catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Http(#[from] HttpResolverError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Controller(#[from] controller::Error),
    #[error("--leader-election is not available in this build; run a single replica")]
    LeaderElectionUnavailable,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("Ctrl-C received, shutting down"),
        _ = terminate => info!("SIGTERM received, shutting down"),
    }
}

async fn build_resolver(
    args: &RunArgs,
    client: &Client,
) -> Result<Arc<dyn MetadataResolver>, RunError> {
    match args.resolver {
        ResolverKind::Catalog => {
            if let Some(path) = &args.catalog_file {
                let resolver = CatalogResolver::from_file(path).await?;
                tokio::spawn(watch_file(resolver.clone(), path.clone()));
                info!(path = %path.display(), "catalog loaded from file");
                Ok(resolver)
            } else if let Some(configmap) = &args.catalog_configmap {
                let resolver = Arc::new(CatalogResolver::new(format!("configmap {configmap}")));
                tokio::spawn(watch_configmap(
                    resolver.clone(),
                    client.clone(),
                    configmap.clone(),
                ));
                info!(%configmap, "waiting for the catalog ConfigMap");
                resolver.wait_loaded().await;
                info!(%configmap, "catalog loaded from ConfigMap");
                Ok(resolver)
            } else {
                Err(RunError::NoCatalogSource)
            }
        }
        ResolverKind::Http => {
            let url = args
                .resolver_url
                .as_deref()
                .ok_or(RunError::NoResolverUrl)?;
            let mut options = HttpResolverOptions::new(url)?;
            options.timeout = args.resolver_timeout;
            options.cache_ttl = args.cache_ttl;
            options.ca_file = args.resolver_ca_file.clone();
            options.token_file = args.resolver_token_file.clone();
            Ok(Arc::new(HttpResolver::new(options)?))
        }
    }
}

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    if args.leader_election {
        return Err(RunError::LeaderElectionUnavailable);
    }
    let client = Client::try_default().await.map_err(RunError::Client)?;
    controller::ensure_crds_installed(&client, &args.watch_namespaces).await?;
    let resolver = build_resolver(&args, &client).await?;
    let settings = Settings {
        namespaces: args.watch_namespaces.clone(),
        reporter: "azs-csp-operator".to_string(),
    };
    controller::run(
        client,
        resolver,
        Arc::new(SystemClock),
        settings,
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
