//! `confab`: parse the configuration, set up logging, run until SIGINT/SIGTERM; or run one of
//! the operator's helpers (`cli`).

use confab_server::config::Config;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // A helper is short and single-threaded: no runtime, and no start again for the arenas.
    if argv.get(1).is_some_and(|a| confab_server::cli::is_helper(a)) {
        return confab_server::cli::run(argv);
    }
    // Before the runtime's threads exist, so that none of them gets an arena of its own.
    confab_server::memory::one_malloc_arena();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(serve(argv)),
        Err(e) => {
            eprintln!("confab: starting the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(argv: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let args = match confab_server::config::parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("confab: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("confab: configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if config.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    match confab_server::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confab: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
