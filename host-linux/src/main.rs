#[cfg(any(target_os = "linux", target_os = "android"))]
fn main() {
    prima_host::os::install(&prima_host_linux::Linux);
    std::process::exit(prima_host::cli::main())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn main() {
    eprintln!("error: this is the Linux shell; build prima-host-macos or prima-host-windows with --features cli");
    std::process::exit(2)
}
