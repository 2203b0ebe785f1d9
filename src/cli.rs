//! Command-line parsing shared by the binaries: argh, with the exit codes their `--help` documents (0 after
//! printing help, the caller's usage code for a bad command line) and a clear message for non-UTF-8 arguments.

use argh::FromArgs;

/// Parses this process's arguments as `T` for the program `name`. On `--help` prints it and returns
/// `Err(0)`; on an error prints `name: ERROR` and `hint`, and returns `Err(usage_code)`.
pub fn parse<T: FromArgs>(name: &str, hint: &str, usage_code: i32) -> Result<T, i32> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<_, _>>()
        .map_err(|a| {
            eprintln!(
                "{name}: argument {} is not valid UTF-8; pass paths and names in UTF-8",
                a.to_string_lossy()
            );
            usage_code
        })?;
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    T::from_args(&[name], &strs).map_err(|early| match early.status {
        Ok(()) => {
            print!("{}", early.output);
            if !early.output.ends_with('\n') {
                println!();
            }
            0
        }
        Err(()) => {
            eprintln!("{name}: {}", early.output.trim_end());
            eprintln!("{hint}");
            usage_code
        }
    })
}
