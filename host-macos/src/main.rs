#[cfg(target_os = "macos")]
fn main() {
    prima_host::os::install(&prima_host_macos::MacOs);
    std::process::exit(prima_host::cli::main())
}

#[cfg(not(target_os = "macos"))]
fn main() {
    eprintln!("error: this is the macOS shell; on this OS use prima-host-linux or prima-host-windows");
    std::process::exit(2)
}
