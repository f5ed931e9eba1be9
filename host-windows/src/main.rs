#[cfg(windows)]
fn main() {
    prima_host::os::install(&prima_host_windows::Windows);
    std::process::exit(prima_host::cli::main())
}

#[cfg(not(windows))]
fn main() {
    eprintln!("error: this is the Windows shell; on this OS use prima-host-linux or prima-host-macos");
    std::process::exit(2)
}
