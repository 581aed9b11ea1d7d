//! `mercato`: run the whole platform, one service, or the migrations.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use platform::Settings;
use platform::config::SETTINGS_HELP;

/// jemalloc instead of glibc's malloc: allocation was a tenth of the gateway's CPU per request (bench/gateway.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Mercato: an e-commerce backend of gRPC services behind an HTTP/JSON gateway.
#[derive(Debug, Parser)]
#[command(name = "mercato", version, after_help = SETTINGS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service and the gateway in this process, each service on its own gRPC port.
    ///
    /// On a fresh machine this uses SQLite files under MERCATO_DATA_DIR (./mercato-data) and the in-process
    /// event bus; a second start reuses the data. Ctrl-C or SIGTERM stops it gracefully.
    #[command(after_help = SETTINGS_HELP)]
    Up {
        /// Seed a demo catalog (products in several categories, with stock) if the catalog is empty.
        #[arg(long)]
        demo: bool,
    },
    /// Run one service or the gateway, as containers do.
    ///
    /// A service listens for gRPC on MERCATO_GRPC_ADDR (default: 127.0.0.1 and its own port); the gateway
    /// on MERCATO_HTTP_ADDR and reaches services at MERCATO_<SERVICE>_URL. Both serve /metrics, /healthz
    /// and /readyz on MERCATO_METRICS_ADDR.
    #[command(after_help = SETTINGS_HELP)]
    Serve {
        /// auth, users, catalog, cart, orders, payments, ledger, refunds, deliveries, notifications, analytics,
        /// support or gateway.
        service: String,
    },
    /// Apply the database migrations of every service (or of the named ones) and exit.
    ///
    /// Reads MERCATO_DATA_DIR, MERCATO_DATABASE_URL and MERCATO_<SERVICE>_DATABASE_URL.
    #[command(after_help = SETTINGS_HELP)]
    Migrate {
        /// Services to migrate; all when none are named.
        services: Vec<String>,
    },
    /// Check the books against the facts and exit 1 on any violation.
    ///
    /// Every ledger transaction must balance per currency and every stored balance must equal the sum of its
    /// postings. Reads the same storage settings as `up`.
    #[command(after_help = SETTINGS_HELP)]
    Audit,
    /// Tell the catalog who bought what from the orders kept so far, and exit.
    ///
    /// Run once after upgrading to a release with product reviews: only buyers review, and the catalog learns of
    /// purchases from orders confirmed since. Running it again changes nothing. Reads the same storage settings
    /// as `up`.
    #[command(after_help = SETTINGS_HELP)]
    BackfillPurchases,
    /// Once after upgrading to a release with returns: tells the orders service when each order delivered so far
    /// was delivered, so that it may be returned within the return window (the orders service learns of
    /// deliveries made since). Running it again changes nothing. Reads the same storage settings as `up`.
    #[command(after_help = SETTINGS_HELP)]
    BackfillDeliveries,
    /// Exit 0 if the local process answers /readyz with 200, else 1 (for container health checks, so images
    /// need no curl).
    ///
    /// Asks http://<MERCATO_METRICS_ADDR>/readyz unless --url is given.
    Healthcheck {
        /// URL to ask instead, e.g. http://127.0.0.1:8080/readyz.
        #[arg(long)]
        url: Option<String>,
    },
}

/// Longest wait for in-flight requests after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter runs on this runtime, so the provider is made inside it and flushed before it stops.
    let export = platform::telemetry::TraceExport::from_env(&service_name(&cli.command));
    let telemetry = match runtime.block_on(async { platform::telemetry::init(&settings, &export) }) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(run(cli, settings));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `service.name` of this process's traces unless OTEL_SERVICE_NAME says otherwise.
fn service_name(command: &Command) -> String {
    match command {
        Command::Serve { service } => format!("mercato-{service}"),
        _ => "mercato".to_owned(),
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Up { demo } => {
            let shutdown = platform::shutdown::on_signal();
            let running =
                mercato::up(settings, mercato::UpOptions { demo, ..Default::default() }, shutdown.clone()).await?;
            println!("Mercato is up.");
            println!("  gateway   http://{}", running.gateway);
            println!("  metrics   http://{}/metrics", running.metrics);
            for (name, addr) in &running.services {
                println!("  {name:<9} grpc://{addr}");
            }
            println!("  data      {}", storage_description(&running.settings));
            println!("Press Ctrl-C to stop.");
            wait_with_grace(running.wait(), shutdown).await
        }
        Command::Serve { service } => {
            let shutdown = platform::shutdown::on_signal();
            wait_with_grace(mercato::serve_one(&service, settings, shutdown.clone()), shutdown).await
        }
        Command::Audit => {
            let violations = mercato::audit(&settings).await?;
            for v in &violations {
                println!("violation: {v}");
            }
            anyhow::ensure!(violations.is_empty(), "the audit found {} violation(s)", violations.len());
            println!("audit: the books are sound");
            Ok(())
        }
        Command::BackfillPurchases => {
            let read = mercato::backfill_purchases(&settings).await?;
            println!("backfill-purchases: the catalog knows the buyers of {read} order(s)");
            Ok(())
        }
        Command::BackfillDeliveries => {
            let news = mercato::backfill_deliveries(&settings).await?;
            println!("backfill-deliveries: the orders service learnt of {news} delivered order(s)");
            Ok(())
        }
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| format!("http://{}/readyz", probe_addr(settings.metrics_addr)));
            let status = mercato::probe::get_status(&url, Duration::from_secs(3)).await?;
            anyhow::ensure!(status == 200, "{url} answered {status}");
            Ok(())
        }
        Command::Migrate { services } => {
            let done = mercato::migrate(&settings, &services).await?;
            println!("migrated: {}", done.join(", "));
            Ok(())
        }
    }
}

/// A wildcard listen address is probed on loopback.
fn probe_addr(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}

fn storage_description(settings: &Settings) -> String {
    match &settings.database_url {
        Some(_) => "PostgreSQL (MERCATO_DATABASE_URL), one database per service".to_owned(),
        None => format!("SQLite files in {}", settings.data_dir.display()),
    }
}

/// Runs until the servers stop; after a stop signal, gives them [`SHUTDOWN_GRACE`] to finish.
async fn wait_with_grace(
    servers: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => result,
        () = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, servers).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}"),
        },
    }
}
