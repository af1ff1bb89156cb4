//! `azs-csp-operator run`: serve the endpoints, build the resolver, start the controllers
//! (with leader election: once this replica holds the Lease), stop on SIGTERM/Ctrl-C.
//!
//! With `--leader-election` a standby runs the lease loop, the endpoints and the watches (a warm
//! standby: its caches stay filled, so a takeover starts without a relist) but no controller:
//! it reconciles, writes and reports nothing. The leader runs both controllers over the same
//! caches. On SIGTERM the leader stops taking work, lets
//! the reconciles in flight finish, releases the Lease and exits 0. A leader that cannot renew
//! the Lease in time drops the controllers at once (no further write) and exits 1, so that
//! Kubernetes restarts it as a standby.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use kube::Client;
use tracing::{debug, error, info, warn};

use crate::{
    azure::{
        self, ArmClient, ArmClientError, ArmSettings, CredentialError, CredentialSettings,
        TransportError, WriteRate,
    },
    cli::{ArmArgs, Mode, ResolverKind, RunArgs},
    conditions::SystemClock,
    controller::azure::AzureMode,
    controller::{self, Reporter, Settings, Tuning},
    resolver::{
        CatalogError, CatalogResolver, HttpResolver, HttpResolverError, HttpResolverOptions,
        MetadataResolver, NoResolver, watch_configmap, watch_file,
    },
    runtime::{self, Health, LeaderElector, LeadershipLost, LeaseSettings, Metrics, ServeError},
};

#[derive(thiserror::Error, Debug)]
pub enum OperatorError {
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
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("stopped leading: {0}")]
    LeadershipLost(#[source] LeadershipLost),
    #[error("--arm-endpoint {0:?} is not a URL")]
    ArmEndpoint(String),
    #[error(transparent)]
    ArmClient(#[from] ArmClientError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Sink(#[from] crate::usage_io::SinkError),
    #[error(transparent)]
    RateCard(#[from] crate::usage::rate_card::RateCardError),
}

/// The usage controller of `args` (DESIGN.md §9). Its credential is `--usage-credential`'s,
/// else the §8 identity's; when neither can be built (local mode without Azure variables),
/// the controller still runs and each Registration with a usageSource says why in its
/// `Usage` condition (SourceFailed), rather than the operator refusing to start.
pub fn usage_mode(args: &RunArgs) -> Result<crate::controller::usage::UsageMode, OperatorError> {
    use crate::usage_io::{SinkClient, SinkSettings, SourceClient, SourceSettings};
    let usage = &args.usage;
    let ca_file = usage
        .usage_ca_file
        .as_deref()
        .or(args.arm.azure_ca_file.as_deref());
    let transport = azure::transport(ca_file, usage.usage_timeout)?;
    let mut client_options = azure_core::http::ClientOptions {
        transport: Some(transport.clone()),
        retry: azure_core::http::RetryOptions::none(),
        ..Default::default()
    };
    let settings = match usage.usage_credential {
        Some(kind) => {
            if let Some(host) = &usage.usage_authority_host {
                let mut cloud = azure_core::cloud::CustomConfiguration::default();
                cloud.authority_host = host.clone();
                client_options.cloud = Some(Arc::new(cloud.into()));
            }
            CredentialSettings {
                kind,
                client_secret_file: usage.usage_client_secret_file.clone(),
                client_options,
                flag: "--usage-credential",
                tenant_id: usage.usage_tenant_id.clone(),
                client_id: usage.usage_client_id.clone(),
            }
        }
        None => CredentialSettings::azure(
            args.arm.azure_credential,
            args.arm.azure_client_secret_file.clone(),
            client_options,
        ),
    };
    let credential = azure::credential::build(settings).map_err(|e| {
        format!("{e}; give the stamp's identity with --usage-credential (and --usage-tenant-id, --usage-client-id, --usage-client-secret-file)")
    });
    if let Err(reason) = &credential {
        warn!(%reason, "no credential for the usage source: Registrations with a usageSource report Usage SourceFailed");
    }
    let source = SourceClient::new(SourceSettings {
        credential,
        transport,
        breaker: crate::usage_io::breaker_settings(),
    });
    let sink = usage
        .usage_sink
        .as_ref()
        .map(|url| {
            SinkClient::new(SinkSettings {
                url: url.clone(),
                token_file: usage.usage_sink_token_file.clone(),
                ca_file: usage.usage_ca_file.clone(),
                timeout: usage.usage_timeout,
                breaker: crate::usage_io::breaker_settings(),
            })
        })
        .transpose()?;
    let rate_card = usage
        .rate_card
        .as_deref()
        .map(crate::usage::rate_card::RateCard::from_file)
        .transpose()?;
    Ok(crate::controller::usage::UsageMode::new(
        Arc::new(source),
        sink.map(Arc::new),
        rate_card.map(Arc::new),
        usage.usage_interval,
        usage.usage_delay,
    ))
}

/// The ARM client of `args`, reporting to `metrics` (azure mode, `verify --in-azure`).
pub fn arm_client(
    args: &ArmArgs,
    writes: WriteRate,
    metrics: Arc<Metrics>,
) -> Result<ArmClient, OperatorError> {
    let endpoint = azure_core::http::Url::parse(&args.arm_endpoint)
        .map_err(|_| OperatorError::ArmEndpoint(args.arm_endpoint.clone()))?;
    let transport = azure::transport(args.azure_ca_file.as_deref(), args.arm_timeout)?;
    let credential = azure::credential::build(CredentialSettings::azure(
        args.azure_credential,
        args.azure_client_secret_file.clone(),
        // No SDK retry for tokens either: a refused or unreachable Entra ID is the reconcile's
        // to retry with backoff, not a minute of retries inside one call.
        azure_core::http::ClientOptions {
            transport: Some(transport.clone()),
            retry: azure_core::http::RetryOptions::none(),
            ..Default::default()
        },
    ))?;
    Ok(ArmClient::new(
        ArmSettings {
            endpoint,
            api_version: args.arm_api_version.clone(),
            timeout: args.arm_timeout,
            writes,
            breaker: crate::upstream::BreakerSettings::default(),
        },
        credential,
        transport,
        metrics,
    )?)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// the future is first polled, so that a signal during startup is not lost (nor fatal).
fn shutdown_signal() -> BoxFuture<'static, ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        Box::pin(async move {
            let terminate = async {
                match terminate {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        error!(%error, "cannot listen for SIGTERM");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let interrupt = async {
                match interrupt {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        error!(%error, "cannot listen for Ctrl-C");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = interrupt => info!("Ctrl-C received, shutting down"),
                _ = terminate => info!("SIGTERM received, shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Box::pin(async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            info!("Ctrl-C received, shutting down");
        })
    }
}

async fn build_resolver(
    args: &RunArgs,
    client: &Client,
    metrics: &Metrics,
) -> Result<Arc<dyn MetadataResolver>, OperatorError> {
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
                Err(OperatorError::NoCatalogSource)
            }
        }
        ResolverKind::Http => {
            let url = args
                .resolver_url
                .as_deref()
                .ok_or(OperatorError::NoResolverUrl)?;
            let mut options = HttpResolverOptions::new(url)?;
            options.timeout = args.resolver_timeout;
            options.cache_ttl = args.cache_ttl;
            options.ca_file = args.resolver_ca_file.clone();
            options.token_file = args.resolver_token_file.clone();
            let resolver = HttpResolver::new(options)?;
            metrics.add_upstream(resolver.breaker().clone());
            Ok(Arc::new(resolver))
        }
    }
}

/// The `reportingController` of Events.
const REPORTER: &str = "azs-csp-operator";

/// How long a standby stays ready after it last reached the Lease.
const STANDBY_READY_FOR: Duration = Duration::from_secs(30);

pub async fn serve(args: RunArgs) -> Result<(), OperatorError> {
    let shutdown = shutdown_signal().shared();
    let metrics = Arc::new(Metrics::new());
    let health = Health::new(args.leader_election, STANDBY_READY_FOR);
    runtime::serve(args.metrics_addr, metrics.clone(), health.clone()).await?;
    {
        // Not ready from the signal on, while the reconciles in flight finish.
        let (shutdown, health) = (shutdown.clone(), health.clone());
        tokio::spawn(async move {
            shutdown.await;
            health.set_stopping();
        });
    }

    let client = Client::try_default().await.map_err(OperatorError::Client)?;
    controller::ensure_crds_installed(&client, &args.watch_namespaces).await?;
    let azure = match args.mode {
        Mode::Local => None,
        Mode::Azure => {
            let arm = Arc::new(arm_client(
                &args.arm,
                WriteRate {
                    per_second: args.arm_writes_per_second,
                    burst: args.arm_write_burst,
                },
                metrics.clone(),
            )?);
            metrics.add_upstream(arm.breaker().clone());
            info!(
                endpoint = %args.arm.arm_endpoint,
                api_version = %args.arm.arm_api_version,
                credential = ?args.arm.azure_credential,
                resync_s = args.azure_resync.as_secs(),
                "azure mode: tenants are added and removed in Azure"
            );
            Some(Arc::new(AzureMode::new(arm, args.azure_resync)))
        }
    };
    let resolver: Arc<dyn MetadataResolver> = if azure.is_some() {
        Arc::new(NoResolver::default())
    } else {
        tokio::select! {
            resolver = build_resolver(&args, &client, &metrics) => resolver?,
            _ = shutdown.clone() => {
                info!("stopped before the resolver was ready");
                return Ok(());
            }
        }
    };
    metrics.set_resolver(resolver.clone());
    let usage = Arc::new(usage_mode(&args)?);
    metrics.add_upstream(usage.source.breaker().clone());
    if let Some(sink) = &usage.sink {
        metrics.add_upstream(sink.breaker().clone());
    }
    let settings = Settings {
        namespaces: args.watch_namespaces.clone(),
        reporter: Reporter {
            controller: REPORTER.to_string(),
            // The Downward API names the pod; outside a pod the operator's name stands in.
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| REPORTER.to_string()),
        },
        registrations: Tuning::REGISTRATIONS,
        customer_subscriptions: Tuning::CUSTOMER_SUBSCRIPTIONS,
        metrics: metrics.clone(),
        health: health.clone(),
        azure,
        usage: Some(usage),
    };

    if !args.leader_election {
        metrics.set_leader(true);
        let result =
            controller::run(client, resolver, Arc::new(SystemClock), settings, shutdown).await;
        health.set_stopping();
        metrics.set_leader(false);
        result?;
        info!("operator stopped");
        return Ok(());
    }

    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease = LeaseSettings::new(namespace, runtime::default_identity());
    let mut elector = LeaderElector::new(client.clone(), lease.clone(), health.clone());

    // Standby: the lease loop, the endpoints and the watches run; the controllers wait until
    // this replica leads.
    let caches = controller::start_caches(&client, &settings)?;
    tokio::select! {
        biased;
        _ = shutdown.clone() => {
            health.set_stopping();
            // An attempt cut short may still have taken the lease: give it back if so.
            release(&mut elector).await;
            info!(identity = %lease.identity, "operator stopped (standby)");
            return Ok(());
        }
        _ = elector.acquire() => {}
    }

    health.set_leader();
    metrics.set_leader(true);
    let mut controllers = Box::pin(controller::run_controllers(
        caches,
        client,
        resolver,
        Arc::new(SystemClock),
        settings,
        shutdown,
    ));
    let outcome = tokio::select! {
        result = &mut controllers => Ok(result),
        lost = elector.hold() => Err(lost),
    };
    metrics.set_leader(false);
    health.set_stopping();
    match outcome {
        // Shutdown (or a controller failure): the controllers have finished the reconciles
        // in flight and stopped writing, so hand the lease over at once.
        Ok(result) => {
            release(&mut elector).await;
            result?;
            info!(identity = %lease.identity, "operator stopped");
            Ok(())
        }
        Err(lost) => {
            // Stop writing at once: dropping the controllers cancels every reconcile in flight.
            drop(controllers);
            error!(
                error = %lost,
                identity = %lease.identity,
                "lost the leader election Lease; exiting so that Kubernetes restarts this replica as a standby"
            );
            Err(OperatorError::LeadershipLost(lost))
        }
    }
}

async fn release(elector: &mut LeaderElector) {
    let lease = elector.settings().clone();
    match elector.release().await {
        Ok(true) => info!(
            lease = %lease.name,
            namespace = %lease.namespace,
            identity = %lease.identity,
            "leader election Lease released"
        ),
        Ok(false) => {
            debug!(identity = %lease.identity, "the Lease was not held; nothing to release")
        }
        Err(error) => warn!(
            %error,
            lease = %lease.name,
            namespace = %lease.namespace,
            "cannot release the leader election Lease; a standby takes over when it expires"
        ),
    }
}
