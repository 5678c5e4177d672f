fn main() -> std::process::ExitCode {
    bazaar_host::cli::main()
}
