#[cfg(any(target_os = "linux", target_os = "android"))]
fn main() {
    prima_host::os::install(&prima_host_android::Android);
    std::process::exit(prima_host::cli::main())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn main() {
    eprintln!("error: the Android shell runs on Android (or Linux)");
    std::process::exit(2)
}
