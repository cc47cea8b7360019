//! `cpc-sync`: see what is stuck in a queue, and repair it (see the
//! library's docs, `cpc_cli`).

fn main() {
    let style = cpc_cli::Style::detect();
    let stdin = std::io::stdin();
    let code = cpc_cli::run(
        std::env::args_os(),
        &mut stdin.lock(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        style,
    );
    std::process::exit(code);
}
