//! The command line of DESIGN.md §5. Every flag also reads an `AZS_CSP_*` variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{azure::CredentialKind, resolver::ConfigMapRef};

#[derive(Parser, Debug)]
#[command(
    name = "azs-csp-operator",
    version,
    about = "Onboards CSP customers' Azure subscriptions to Azure Stack registrations for multitenant usage billing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controllers.
    Run(Box<RunArgs>),
    /// Print both CustomResourceDefinitions as YAML.
    Crds {
        /// Write one file per CRD into this directory instead (how crds/ is generated).
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Check that a customer subscription is attached to a registration.
    Verify(VerifyArgs),
    /// Work with catalog files.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Serve Entra ID, ARM's Microsoft.AzureStack and the http resolver from a catalog, with
    /// --stamp the stamp's usage and subscription admin APIs, and a CloudEvents sink, over
    /// HTTPS on loopback, for rehearsals and tests (DESIGN.md section 10).
    Emulate(EmulateArgs),
    /// Print the built-in table of the stamp's usage meters: id, name, unit (DESIGN.md §9).
    Meters {
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: MetersOutput,
    },
    /// Chargeback from the cluster's usage totals (DESIGN.md §9).
    #[command(subcommand)]
    Usage(UsageCommand),
}

/// How `meters` prints the table.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetersOutput {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct EmulateArgs {
    /// Catalog YAML file: subscriptions, approvals, registrations and service principals.
    #[arg(long, env = "AZS_CSP_EMULATOR_CATALOG")]
    pub catalog: PathBuf,
    /// Address to listen on (port 0: any free port, printed on stdout).
    #[arg(
        long,
        env = "AZS_CSP_EMULATOR_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub listen: SocketAddr,
    /// Directory with tls.crt and tls.key to serve; without them a CA and a server certificate
    /// are made and written there as ca.crt, tls.crt and tls.key.
    #[arg(long, env = "AZS_CSP_EMULATOR_TLS_DIR", default_value = "emulator-tls")]
    pub tls_dir: PathBuf,
    /// ARM writes a principal may burst per subscription before 429s.
    #[arg(long, env = "AZS_CSP_EMULATOR_ARM_WRITE_BURST", default_value_t = 200)]
    pub arm_write_burst: u32,
    /// ARM writes per second refilled into that bucket.
    #[arg(long, env = "AZS_CSP_EMULATOR_ARM_WRITE_REFILL", value_parser = parse_refill, default_value = "10")]
    pub arm_write_refill: f64,
    /// Stamp YAML file: local subscriptions, VMs, storage; serves the admin usage APIs.
    #[arg(long, env = "AZS_CSP_EMULATOR_STAMP")]
    pub stamp: Option<PathBuf>,
    /// File holding the bearer token the CloudEvents sink requires (none: any POST is taken).
    #[arg(long, env = "AZS_CSP_EMULATOR_SINK_TOKEN_FILE")]
    pub sink_token_file: Option<PathBuf>,
    /// Log line format.
    #[arg(long, env = "AZS_CSP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_refill(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a positive number of writes per second"
        )),
    }
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Validate a catalog file; exits non-zero with the reason when it is invalid.
    Check {
        /// The catalog YAML file.
        file: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolverKind {
    Catalog,
    Http,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 500ms, 5s, 5m)"))
}

/// What the operator does with a CustomerSubscription that passes its rules (DESIGN.md §8).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Decide every rule from resolver metadata; write nothing outside the cluster.
    Local,
    /// Add and remove the tenants on the registration in Azure; Azure's answer is the condition.
    Azure,
}

fn parse_positive(s: &str) -> Result<f64, String> {
    parse_refill(s)
}

fn parse_burst(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number of writes")),
    }
}

/// How to reach ARM and as whom: shared by `run --mode azure` and `verify --in-azure`.
#[derive(Args, Debug, Clone)]
pub struct ArmArgs {
    /// Base URL of Azure Resource Manager.
    #[arg(
        long,
        env = "AZS_CSP_ARM_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub arm_endpoint: String,
    /// The Microsoft.AzureStack api-version sent.
    #[arg(long, env = "AZS_CSP_ARM_API_VERSION", default_value = crate::azure::client::DEFAULT_API_VERSION,
        value_parser = clap::builder::PossibleValuesParser::new(crate::azure::client::API_VERSIONS))]
    pub arm_api_version: String,
    /// Timeout of one ARM or Entra ID request.
    #[arg(long, env = "AZS_CSP_ARM_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub arm_timeout: Duration,
    /// How the operator signs in to Entra ID (AZURE_TENANT_ID, AZURE_CLIENT_ID and
    /// AZURE_FEDERATED_TOKEN_FILE or AZURE_CLIENT_SECRET; AZURE_AUTHORITY_HOST picks the cloud).
    #[arg(
        long,
        env = "AZS_CSP_AZURE_CREDENTIAL",
        value_enum,
        default_value = "workload-identity"
    )]
    pub azure_credential: CredentialKind,
    /// File holding the client secret (client-secret credential), re-read when it changes.
    #[arg(long, env = "AZS_CSP_AZURE_CLIENT_SECRET_FILE")]
    pub azure_client_secret_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for ARM and Entra ID, besides the system roots.
    #[arg(long, env = "AZS_CSP_AZURE_CA_FILE")]
    pub azure_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// local: decide from resolver metadata; azure: add the tenants in Azure (DESIGN.md §8).
    #[arg(long, env = "AZS_CSP_MODE", value_enum, default_value = "local")]
    pub mode: Mode,
    #[command(flatten)]
    pub arm: ArmArgs,
    #[command(flatten)]
    pub usage: UsageArgs,
    /// How often each Registration's tenants in Azure are listed and compared (azure mode).
    #[arg(long, env = "AZS_CSP_AZURE_RESYNC", value_parser = parse_duration, default_value = "10m")]
    pub azure_resync: Duration,
    /// ARM writes (PUT, DELETE) per second the operator allows itself (azure mode).
    #[arg(long, env = "AZS_CSP_ARM_WRITES_PER_SECOND", value_parser = parse_positive, default_value = "5")]
    pub arm_writes_per_second: f64,
    /// ARM writes the operator may send at once before spacing them (azure mode).
    #[arg(long, env = "AZS_CSP_ARM_WRITE_BURST", value_parser = parse_burst, default_value = "20")]
    pub arm_write_burst: u32,
    /// Where subscription metadata and approvals come from.
    #[arg(long, env = "AZS_CSP_RESOLVER", value_enum, default_value = "catalog")]
    pub resolver: ResolverKind,
    /// Catalog YAML file, watched for changes (catalog resolver).
    #[arg(
        long,
        env = "AZS_CSP_CATALOG_FILE",
        conflicts_with = "catalog_configmap"
    )]
    pub catalog_file: Option<PathBuf>,
    /// ConfigMap NS/NAME whose key catalog.yaml holds the catalog, watched through the API.
    #[arg(long, env = "AZS_CSP_CATALOG_CONFIGMAP")]
    pub catalog_configmap: Option<ConfigMapRef>,
    /// Base URL of the metadata server (http resolver).
    #[arg(long, env = "AZS_CSP_RESOLVER_URL")]
    pub resolver_url: Option<String>,
    /// File holding a bearer token for the metadata server, re-read on every request.
    #[arg(long, env = "AZS_CSP_RESOLVER_TOKEN_FILE")]
    pub resolver_token_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for the metadata server.
    #[arg(long, env = "AZS_CSP_RESOLVER_CA_FILE")]
    pub resolver_ca_file: Option<PathBuf>,
    /// Timeout of one request to the metadata server.
    #[arg(long, env = "AZS_CSP_RESOLVER_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub resolver_timeout: Duration,
    /// How long http resolver answers are cached.
    #[arg(long, env = "AZS_CSP_CACHE_TTL", value_parser = parse_duration, default_value = "5m")]
    pub cache_ttl: Duration,
    /// Namespace to watch; repeat for several (comma-separated in the variable). Default: all.
    #[arg(
        long = "watch-namespace",
        env = "AZS_CSP_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// Address of the metrics and health endpoints.
    #[arg(long, env = "AZS_CSP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Run as one of several replicas, writing only while holding the leader Lease.
    #[arg(long, env = "AZS_CSP_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the leader election Lease `azs-csp-operator`. Default: `POD_NAMESPACE`, else
    /// the namespace of the in-cluster service account or the kubeconfig context.
    #[arg(long, env = "AZS_CSP_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Log line format.
    #[arg(long, env = "AZS_CSP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Namespace of the Registration.
    #[arg(long, env = "AZS_CSP_NAMESPACE")]
    pub namespace: String,
    /// Name of the Registration.
    #[arg(long, env = "AZS_CSP_REGISTRATION")]
    pub registration: String,
    /// The customer's Azure subscription ID.
    #[arg(long, env = "AZS_CSP_SUBSCRIPTION_ID")]
    pub subscription_id: String,
    /// Also ask ARM whether the registration holds the subscription, and compare.
    #[arg(long, env = "AZS_CSP_VERIFY_IN_AZURE")]
    pub in_azure: bool,
    #[command(flatten)]
    pub arm: ArmArgs,
}

/// Usage ingestion and forwarding (DESIGN.md §9): where records go and as whom the stamp's
/// usage API is read.
#[derive(Args, Debug, Clone)]
pub struct UsageArgs {
    /// CloudEvents endpoint that receives the attributed records (batch mode); without it
    /// usage is only totalled into status.
    #[arg(long, env = "AZS_CSP_USAGE_SINK")]
    pub usage_sink: Option<String>,
    /// File holding the sink's bearer token, re-read on every request.
    #[arg(long, env = "AZS_CSP_USAGE_SINK_TOKEN_FILE")]
    pub usage_sink_token_file: Option<PathBuf>,
    /// How often each Registration's due windows are looked for.
    #[arg(long, env = "AZS_CSP_USAGE_INTERVAL", value_parser = parse_duration, default_value = "5m")]
    pub usage_interval: Duration,
    /// How old a window of reported time must be before it is ingested.
    #[arg(long, env = "AZS_CSP_USAGE_DELAY", value_parser = parse_duration, default_value = "2h")]
    pub usage_delay: Duration,
    /// Timeout of one request to the usage source, its directory or the sink.
    #[arg(long, env = "AZS_CSP_USAGE_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub usage_timeout: Duration,
    /// PEM file of CA certificates to trust for the usage source and the sink.
    #[arg(long, env = "AZS_CSP_USAGE_CA_FILE")]
    pub usage_ca_file: Option<PathBuf>,
    /// Rate card YAML (currency, rates) that prices the meters; without it, quantities only.
    #[arg(long, env = "AZS_CSP_RATE_CARD")]
    pub rate_card: Option<PathBuf>,
    /// How the operator signs in to the stamp's directory; default: the identity of
    /// --azure-credential.
    #[arg(long, env = "AZS_CSP_USAGE_CREDENTIAL", value_enum)]
    pub usage_credential: Option<CredentialKind>,
    /// Directory tenant of the usage credential (default AZURE_TENANT_ID).
    #[arg(long, env = "AZS_CSP_USAGE_TENANT_ID")]
    pub usage_tenant_id: Option<String>,
    /// Client id of the usage credential (default AZURE_CLIENT_ID).
    #[arg(long, env = "AZS_CSP_USAGE_CLIENT_ID")]
    pub usage_client_id: Option<String>,
    /// File holding the usage credential's client secret, re-read when it changes.
    #[arg(long, env = "AZS_CSP_USAGE_CLIENT_SECRET_FILE")]
    pub usage_client_secret_file: Option<PathBuf>,
    /// Entra ID authority of the stamp's directory (default AZURE_AUTHORITY_HOST).
    #[arg(long, env = "AZS_CSP_USAGE_AUTHORITY_HOST")]
    pub usage_authority_host: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UsageCommand {
    /// Print the chargeback table: per customer, tenant, vcore-hours, charge and through.
    Report(UsageReportArgs),
}

#[derive(Args, Debug)]
pub struct UsageReportArgs {
    /// Only this namespace (default: all).
    #[arg(long, short = 'n', env = "AZS_CSP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this Registration's customers.
    #[arg(long, env = "AZS_CSP_REGISTRATION")]
    pub registration: Option<String>,
    /// The month to print, YYYY-MM: the current period or the one before (default: current).
    #[arg(long)]
    pub period: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: ReportOutput,
}

/// How `usage report` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutput {
    Table,
    Csv,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn meters_prints_a_table_or_json() {
        let cases: [(&[&str], Option<MetersOutput>); 5] = [
            (&["meters"], Some(MetersOutput::Table)),
            (&["meters", "-o", "json"], Some(MetersOutput::Json)),
            (&["meters", "--output", "table"], Some(MetersOutput::Table)),
            (&["meters", "--output=json"], Some(MetersOutput::Json)),
            (&["meters", "-o", "yaml"], None),
        ];
        for (args, expected) in cases {
            let parsed = Cli::try_parse_from(
                std::iter::once("azs-csp-operator").chain(args.iter().copied()),
            );
            let output = parsed.ok().map(|cli| match cli.command {
                Command::Meters { output } => output,
                other => panic!("{args:?} parsed as {other:?}"),
            });
            assert_eq!(output, expected, "{args:?}");
        }
    }

    #[test]
    fn durations_and_repeated_namespaces() {
        let cli = Cli::try_parse_from([
            "azs-csp-operator",
            "run",
            "--catalog-file",
            "c.yaml",
            "--resolver-timeout",
            "500ms",
            "--cache-ttl",
            "5m",
            "--watch-namespace",
            "a",
            "--watch-namespace",
            "b",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.resolver_timeout, Duration::from_millis(500));
        assert_eq!(args.cache_ttl, Duration::from_secs(300));
        assert_eq!(args.watch_namespaces, ["a", "b"]);
        assert_eq!(args.resolver, ResolverKind::Catalog);
        assert_eq!(args.mode, Mode::Local);
        assert_eq!(args.arm.arm_api_version, "2022-06-01");
        assert_eq!(args.azure_resync, Duration::from_secs(600));
        assert_eq!(
            (args.arm_writes_per_second, args.arm_write_burst),
            (5.0, 20)
        );
        assert_eq!(args.arm.azure_credential, CredentialKind::WorkloadIdentity);
        assert_eq!(args.usage.usage_interval, Duration::from_secs(300));
        assert_eq!(args.usage.usage_delay, Duration::from_secs(7200));
        assert_eq!(args.usage.usage_credential, None);
    }

    #[test]
    fn usage_flags() {
        let cli = Cli::try_parse_from([
            "azs-csp-operator",
            "run",
            "--usage-sink",
            "https://meter.example/events",
            "--usage-sink-token-file",
            "/t",
            "--usage-interval",
            "1s",
            "--usage-delay",
            "0s",
            "--usage-credential",
            "client-secret",
            "--usage-tenant-id",
            "t",
            "--usage-client-id",
            "c",
            "--usage-client-secret-file",
            "/s",
            "--usage-authority-host",
            "https://login.stamp",
            "--rate-card",
            "r.yaml",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let usage = args.usage;
        assert_eq!(
            usage.usage_sink.as_deref(),
            Some("https://meter.example/events")
        );
        assert_eq!(usage.usage_interval, Duration::from_secs(1));
        assert_eq!(usage.usage_delay, Duration::ZERO);
        assert_eq!(usage.usage_credential, Some(CredentialKind::ClientSecret));
        assert_eq!(usage.usage_tenant_id.as_deref(), Some("t"));
        let cases: [(&[&str], Option<ReportOutput>); 4] = [
            (&["usage", "report"], Some(ReportOutput::Table)),
            (&["usage", "report", "-o", "csv"], Some(ReportOutput::Csv)),
            (
                &["usage", "report", "-n", "ns", "--output", "json"],
                Some(ReportOutput::Json),
            ),
            (&["usage", "report", "-o", "yaml"], None),
        ];
        for (argv, expected) in cases {
            let parsed = Cli::try_parse_from(
                std::iter::once("azs-csp-operator").chain(argv.iter().copied()),
            );
            let output = parsed.ok().map(|cli| match cli.command {
                Command::Usage(UsageCommand::Report(report)) => report.output,
                other => panic!("{argv:?} parsed as {other:?}"),
            });
            assert_eq!(output, expected, "{argv:?}");
        }
    }

    #[test]
    fn azure_mode_flags() {
        let cli = Cli::try_parse_from([
            "azs-csp-operator",
            "run",
            "--mode",
            "azure",
            "--arm-endpoint",
            "https://127.0.0.1:8443",
            "--arm-api-version",
            "2017-06-01",
            "--azure-credential",
            "client-secret",
            "--azure-client-secret-file",
            "/secret/clientSecret",
            "--azure-resync",
            "30s",
            "--arm-writes-per-second",
            "2.5",
            "--arm-write-burst",
            "200",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.mode, Mode::Azure);
        assert_eq!(args.arm.arm_api_version, "2017-06-01");
        assert_eq!(args.arm.azure_credential, CredentialKind::ClientSecret);
        assert_eq!(args.azure_resync, Duration::from_secs(30));
        assert_eq!(
            (args.arm_writes_per_second, args.arm_write_burst),
            (2.5, 200)
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for argv in [
            vec!["azs-csp-operator", "run", "--resolver-timeout", "soon"],
            vec!["azs-csp-operator", "run", "--catalog-configmap", "no-slash"],
            vec!["azs-csp-operator", "run", "--resolver", "ftp"],
            vec![
                "azs-csp-operator",
                "run",
                "--catalog-file",
                "a",
                "--catalog-configmap",
                "ns/n",
            ],
            vec!["azs-csp-operator", "verify", "--namespace", "ns"],
            vec!["azs-csp-operator", "emulate"],
            vec!["azs-csp-operator", "run", "--mode", "cloud"],
            vec![
                "azs-csp-operator",
                "run",
                "--arm-api-version",
                "2020-06-01-preview",
            ],
            vec!["azs-csp-operator", "run", "--azure-credential", "password"],
            vec!["azs-csp-operator", "run", "--arm-write-burst", "0"],
            vec!["azs-csp-operator", "run", "--arm-writes-per-second", "-1"],
            vec![
                "azs-csp-operator",
                "emulate",
                "--catalog",
                "c.yaml",
                "--arm-write-refill",
                "0",
            ],
        ] {
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }
}
