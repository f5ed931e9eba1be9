fn main() {
    std::process::exit(prima_host::cli::main())
}
