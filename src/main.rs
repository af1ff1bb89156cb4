use std::process::ExitCode;

use azs_csp_operator::{
    azure,
    cli::{CatalogCommand, Cli, Command, LogFormat, MetersOutput},
    crd, emulator, operator, resolver, usage, verify,
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs collected from a pod or a file stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn write_crd_files(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in crd::files()? {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// `usage report`: lists both kinds and renders the chargeback rows.
async fn usage_report(
    args: &azs_csp_operator::cli::UsageReportArgs,
) -> Result<String, Box<dyn std::error::Error>> {
    use azs_csp_operator::{
        api::{CustomerSubscription, Registration},
        cli::ReportOutput,
        usage::report,
    };
    use kube::{Api, api::ListParams};
    if let Some(period) = &args.period {
        usage::period::Month::parse(period)?;
    }
    let client = kube::Client::try_default().await?;
    let (registrations, customers): (Api<Registration>, Api<CustomerSubscription>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (Api::all(client.clone()), Api::all(client)),
        };
    let registrations = registrations.list(&ListParams::default()).await?.items;
    let customers = customers.list(&ListParams::default()).await?.items;
    let rows = report::rows(
        &registrations,
        &customers,
        args.registration.as_deref(),
        args.period.as_deref(),
    );
    Ok(match args.output {
        ReportOutput::Table => report::render_table(&rows),
        ReportOutput::Csv => report::render_csv(&rows),
        ReportOutput::Json => report::render_json(&rows)?,
    })
}

/// Allocations of 512 KiB and more (a LIST page of 500 objects, a catalog file, a usage page)
/// get pages of their own, which go back to the system when freed. glibc raises that
/// threshold to the largest block freed so far, so after the first large free such blocks
/// come from the heap instead, and what they leave behind stays resident: at N = 10,000 that
/// was 2–4 MiB of the operator's resident memory (docs/benchmarks.md, R10). Fixing the
/// threshold turns that adjustment off, and leaves glibc giving back the top of the heap above
/// 128 KiB free: that costs a usage catch-up, which frees and takes back hundreds of KiB a page,
/// about 3.6 s of its 18 s of CPU in page faults (U7), and keeping 16 MiB instead cost local
/// mode 1 MiB of its peak; memory at rest wins. No Rust allocator crate offers less than
/// replacing the allocator, which measured worse here.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_blocks_to_the_system() {
    const MMAP_THRESHOLD: libc::c_int = 512 * 1024;
    // SAFETY: mallopt only sets a parameter of glibc's allocator, before any thread exists;
    // a value it refuses leaves the default in place (it returns 0), which is harmless.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks_to_the_system() {}

fn main() -> ExitCode {
    return_large_blocks_to_the_system();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => {
                init_tracing(args.log_format);
                match operator::serve(*args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(%error, "operator stopped");
                        eprintln!("error: {error}");
                        ExitCode::from(1)
                    }
                }
            }
            Command::Crds { output_dir: None } => match crd::all_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: cannot render the CRDs: {error}");
                    ExitCode::from(2)
                }
            },
            Command::Crds { output_dir: Some(dir) } => match write_crd_files(&dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: cannot write the CRDs to {}: {error}", dir.display());
                    ExitCode::from(2)
                }
            },
            Command::Catalog(CatalogCommand::Check { file }) => match resolver::check_catalog_file(&file) {
                Ok(summary) => {
                    println!("{}: valid catalog: {summary}", file.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{}: invalid catalog: {error}", file.display());
                    ExitCode::from(1)
                }
            },
            Command::Emulate(args) => {
                init_tracing(args.log_format);
                let options = emulator::EmulatorOptions {
                    catalog_file: args.catalog,
                    listen: args.listen,
                    tls_dir: args.tls_dir,
                    write_burst: args.arm_write_burst,
                    write_refill_per_second: args.arm_write_refill,
                    stamp_file: args.stamp,
                    sink_token_file: args.sink_token_file,
                };
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                match emulator::run(options, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        tracing::error!(%error, "emulator stopped");
                        eprintln!("error: {error}");
                        ExitCode::from(1)
                    }
                }
            }
            Command::Usage(azs_csp_operator::cli::UsageCommand::Report(args)) => {
                match usage_report(&args).await {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("error: {error}");
                        ExitCode::from(2)
                    }
                }
            }
            Command::Meters { output: MetersOutput::Table } => {
                print!("{}", usage::meter::render_table());
                ExitCode::SUCCESS
            }
            Command::Meters { output: MetersOutput::Json } => match usage::meter::render_json() {
                Ok(json) => {
                    print!("{json}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: cannot render the meter table: {error}");
                    ExitCode::from(2)
                }
            },
            Command::Verify(args) => {
                let client = match kube::Client::try_default().await {
                    Ok(client) => client,
                    Err(error) => {
                        eprintln!("error: cannot build a Kubernetes client: {error}");
                        return ExitCode::from(2);
                    }
                };
                let cluster = match verify::run(client.clone(), &args.namespace, &args.registration, &args.subscription_id).await {
                    Ok(answer) => answer,
                    Err(error) => {
                        eprintln!("error: {error}");
                        return ExitCode::from(2);
                    }
                };
                let mut agree = true;
                match &cluster {
                    Ok(mapping) => println!(
                        "Attached: CustomerSubscription {}/{} maps subscription {} (tenant {}) to registration {}",
                        args.namespace,
                        mapping.customer_subscription,
                        mapping.subscription_id,
                        mapping.tenant_id.as_deref().unwrap_or("unknown"),
                        mapping.arm_resource_id.as_deref().unwrap_or(&args.registration),
                    ),
                    Err(failure) => println!("{}: {}", failure.reason, failure.message),
                }
                if args.in_azure {
                    let writes = azure::WriteRate { per_second: 1.0, burst: 1 };
                    let metrics = std::sync::Arc::new(azs_csp_operator::runtime::Metrics::new());
                    let arm = match operator::arm_client(&args.arm, writes, metrics) {
                        Ok(arm) => arm,
                        Err(error) => {
                            eprintln!("error: {error}");
                            return ExitCode::from(2);
                        }
                    };
                    match verify::ask_azure(client, &arm, &args.namespace, &args.registration, &args.subscription_id).await {
                        Ok(Some((arm_id, answer))) => {
                            let (same, text) = verify::compare(&cluster, &answer, &arm_id);
                            println!("{text}");
                            agree = same;
                            if answer.is_err() {
                                return ExitCode::from(2);
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            eprintln!("error: {error}");
                            return ExitCode::from(2);
                        }
                    }
                }
                if cluster.is_ok() && agree {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
        }
    })
}
