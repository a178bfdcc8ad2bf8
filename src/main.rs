//! The `riskgate` command: parse the CLI, load configuration, start.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use riskgate::config::{Settings, DEMO_API_KEY};
use riskgate::roundtable::DEMO_SESSIONS;
use riskgate::startup::{open_store, Application};
use riskgate::telemetry;

/// Risk decisions before the money moves: fetches a Roundtable session
/// report, applies the policy, stores and answers allow / review / block.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve {
        /// Serve built-in demo sessions instead of calling Roundtable, and
        /// accept the demo API key. Uses the default SQLite database.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI 3.1 document (as served at /openapi.json) and exit.
    Openapi,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Openapi) {
        println!("{}", riskgate::api::openapi::document());
        return ExitCode::SUCCESS;
    }
    let demo = matches!(cli.command, Command::Serve { demo: true });
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    if demo {
        env.insert("RISKGATE_DEMO".into(), "true".into());
    }
    let settings = match Settings::load_from(cli.config.as_deref(), env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("riskgate: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format);

    let result = match cli.command {
        Command::Serve { .. } => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Openapi => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("riskgate: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let demo = settings.demo;
    let listen = settings.listen.clone();
    let app = Application::build(settings).await?;
    if demo {
        print_demo_banner(&listen, app.port());
    }
    app.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    open_store(&settings).await?.migrate().await?;
    println!("migrations applied");
    Ok(())
}

fn print_demo_banner(listen: &str, port: u16) {
    let host = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
    let base = format!("http://{host}:{port}");
    println!("\nriskgate demo on {base}  (SQLite, built-in sessions; Ctrl-C stops)");
    println!("API key: {DEMO_API_KEY}\n\nTry:");
    for (session, event, _) in DEMO_SESSIONS {
        println!(
            "  curl -s -X POST {base}/v1/evaluations -H 'Authorization: Bearer {DEMO_API_KEY}' \
             -H 'Content-Type: application/json' -d '{{\"session_id\":\"{session}\",\"event\":\"{event}\"}}'"
        );
    }
    println!();
}
