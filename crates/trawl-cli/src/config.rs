//! Layered settings for `trawl scan`, and `trawl config show`.
//!
//! Every long flag of `trawl scan` is also a setting: a key of `trawl.toml`
//! (the flag's name without the dashes) and a `TRAWL_*` environment
//! variable (the key in capitals, `-` as `_`). For each setting the first
//! of these wins:
//!
//! 1. the command line;
//! 2. the environment variable;
//! 3. the file: `--config FILE`, else `TRAWL_CONFIG`, else `trawl.toml` in
//!    the working folder (none of them with `--no-config`);
//! 4. the built-in default.
//!
//! The layers are merged into one argument list that clap parses, so the
//! file and the environment are validated exactly like flags. A list (such
//! as `output` or `rules`) is taken whole from one layer, never merged.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, Args, Command, CommandFactory};
use trawl::objstore::redact_url;

/// The file looked for in the working folder.
pub(crate) const FILE_NAME: &str = "trawl.toml";

/// The prefix of the environment variables.
const ENV_PREFIX: &str = "TRAWL_";

/// The variable naming the file when `--config` does not.
const CONFIG_ENV: &str = "TRAWL_CONFIG";

/// Flags that choose the file: not settings themselves.
const FILE_FLAGS: [&str; 2] = ["config", "no_config"];

/// Settings whose values are paths (or `FORMAT:FILE`): relative ones in a
/// file are read from the file's folder.
const PATH_KEYS: [&str; 4] = ["rules", "baseline", "urls", "output"];

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    CommandLine,
    /// The variable's name.
    Env(String),
    File,
    Default,
}

/// How a setting takes values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A flag without a value: `true` or `false`.
    Switch,
    /// One value.
    Single,
    /// Any number of values (a repeatable flag).
    List,
}

/// One setting of the effective configuration.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// The key: the long flag without its dashes.
    pub(crate) key: String,
    kind: Kind,
    /// The values given; for a switch, `["true"]` when on.
    pub(crate) values: Vec<String>,
    pub(crate) source: Source,
    /// The default in words, for a setting without a default value.
    default: Option<String>,
}

/// The arguments of `trawl scan` with every layer applied.
#[derive(Debug)]
pub(crate) struct Layered {
    /// The scan subcommand's arguments (without its name): the command
    /// line's own, after those the environment and the file add.
    pub(crate) args: Vec<OsString>,
    /// The file read, if any.
    pub(crate) file: Option<PathBuf>,
    pub(crate) settings: Vec<Setting>,
}

/// The `scan` subcommand's definition, with the paths optional (the
/// layers are read before the paths are checked, and `config show` needs
/// none).
pub(crate) fn scan_command() -> Command {
    crate::Cli::command()
        .find_subcommand("scan")
        .expect("trawl has a scan subcommand")
        .clone()
        .mut_arg("paths", |arg| {
            arg.required(false)
                .required_unless_present(clap::builder::Resettable::Reset)
        })
}

/// Applies the environment and the configuration file under the scan
/// arguments `given` (those after `scan` on the command line). `env` reads
/// a variable; `cwd` is where `trawl.toml` is looked for.
pub(crate) fn layer(
    given: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Layered> {
    let command = scan_command();
    // Errors of the command line's own are reported by the full parse
    // that follows; a requirement may be met by a layer below it.
    let matches = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(std::iter::once(OsString::from("scan")).chain(given.iter().cloned()))
        .map_err(|err| anyhow!("{}", first_line(&err)))?;
    let file = config_file(&matches, env, cwd);
    let table = match &file {
        Some(path) => read_table(path)?,
        None => toml::Table::new(),
    };
    let settable: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|arg| {
            arg.get_long().is_some()
                && !arg.is_hide_set()
                && !FILE_FLAGS.contains(&arg.get_id().as_str())
                && kind(arg).is_some()
        })
        .collect();
    check_keys(&table, &settable, file.as_deref())?;

    let mut settings = Vec::with_capacity(settable.len());
    let mut added = Vec::new();
    for arg in settable {
        let key = arg.get_long().expect("filtered on long").to_owned();
        let kind = kind(arg).expect("filtered on kind");
        let given_here = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        let negated = negation(&command, arg).is_some_and(|no| given_here(no.get_id().as_str()));
        // A layer's value yields to a flag of the command line it conflicts
        // with (`--show-secrets` over a file's `redact = true`).
        let overruled = negated || conflicts(&command, arg).any(&given_here);
        let variable = env_name(&key);
        let (values, source) = if given_here(arg.get_id().as_str()) {
            let values = given_values(&matches, arg.get_id().as_str(), kind);
            (values, Source::CommandLine)
        } else if negated {
            (vec!["false".to_owned()], Source::CommandLine)
        } else if let Some(text) = env(&variable).filter(|_| !overruled) {
            let values = env_values(&text, kind).with_context(|| format!("{variable}={text:?}"))?;
            (values, Source::Env(variable))
        } else if let Some(value) = names(arg)
            .find_map(|name| table.get(name))
            .filter(|_| !overruled)
        {
            let path = file.as_deref().expect("a table comes from a file");
            let mut values = file_values(value, kind)
                .with_context(|| format!("{}: key `{key}`", path.display()))?;
            if PATH_KEYS.contains(&key.as_str()) {
                let base = path.parent().unwrap_or(Path::new(""));
                values = values.iter().map(|v| relative_to(base, v)).collect();
            }
            (values, Source::File)
        } else {
            let defaults = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            (defaults, Source::Default)
        };
        if matches!(source, Source::Env(_) | Source::File) {
            let flags = flags(&key, kind, &values);
            check_values(&command, &flags).with_context(|| match &source {
                Source::Env(variable) => variable.clone(),
                _ => format!(
                    "{}: key `{key}`",
                    file.as_deref().expect("from a file").display()
                ),
            })?;
            added.extend(flags);
        }
        settings.push(Setting {
            key,
            kind,
            values,
            source,
            default: default_text(arg),
        });
    }
    added.extend(given.iter().cloned());
    Ok(Layered {
        args: added,
        file,
        settings,
    })
}

/// The file to read: `--config`, `TRAWL_CONFIG`, or `trawl.toml` in `cwd`
/// if there is one; none with `--no-config`.
fn config_file(
    matches: &clap::ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Option<PathBuf> {
    // Not `get_flag`: after a command-line error, defaults are not filled.
    if matches.try_get_one::<bool>("no_config").ok().flatten() == Some(&true) {
        return None;
    }
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        return Some(path.clone());
    }
    if let Some(path) = env(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let found = cwd.join(FILE_NAME);
    found.is_file().then_some(found)
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    text.parse::<toml::Table>()
        .map_err(|err| anyhow!("{}: {}", path.display(), err.to_string().trim_end()))
}

/// Fails on the first key that is no setting, naming the nearest one.
fn check_keys(table: &toml::Table, settable: &[&clap::Arg], file: Option<&Path>) -> Result<()> {
    let keys: BTreeSet<&str> = settable.iter().flat_map(|arg| names(arg)).collect();
    for key in table.keys() {
        if keys.contains(key.as_str()) {
            continue;
        }
        let file = file.expect("a table comes from a file").display();
        if key == "paths" {
            bail!("{file}: `paths` cannot be set in the file: give them to `trawl scan`");
        }
        match nearest(key, &keys) {
            Some(near) => bail!("{file}: unknown key `{key}`; did you mean `{near}`?"),
            None => {
                bail!("{file}: unknown key `{key}`; the keys are the long flags of `trawl scan`")
            }
        }
    }
    Ok(())
}

/// The valid key closest to `key`, if any is close enough to be a typo.
fn nearest<'k>(key: &str, keys: &BTreeSet<&'k str>) -> Option<&'k str> {
    let wanted = key.replace('_', "-").to_ascii_lowercase();
    keys.iter()
        .map(|candidate| (strsim::levenshtein(&wanted, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 3.max(candidate.len() / 3))
        .min()
        .map(|(_, candidate)| candidate)
}

/// The keys of a setting: its long flag, and the flag's aliases.
fn names(arg: &clap::Arg) -> impl Iterator<Item = &str> {
    arg.get_long()
        .into_iter()
        .chain(arg.get_all_aliases().unwrap_or_default())
}

/// The hidden `--no-<switch>` flag that turns the switch `arg` off.
fn negation<'c>(command: &'c Command, arg: &clap::Arg) -> Option<&'c clap::Arg> {
    if kind(arg) != Some(Kind::Switch) {
        return None;
    }
    let long = format!("no-{}", arg.get_long()?);
    command
        .get_arguments()
        .find(|other| other.is_hide_set() && other.get_long() == Some(long.as_str()))
}

/// The ids of the arguments that cannot be given with `arg`, declared on
/// either side.
fn conflicts<'c>(command: &'c Command, arg: &'c clap::Arg) -> impl Iterator<Item = &'c str> {
    command
        .get_arguments()
        .filter(move |other| {
            other.get_id() != arg.get_id()
                && (command.get_arg_conflicts_with(arg).contains(other)
                    || command.get_arg_conflicts_with(other).contains(&arg))
        })
        .map(|other| other.get_id().as_str())
}

fn kind(arg: &clap::Arg) -> Option<Kind> {
    match arg.get_action() {
        ArgAction::SetTrue => Some(Kind::Switch),
        ArgAction::Set => Some(Kind::Single),
        ArgAction::Append => Some(Kind::List),
        _ => None,
    }
}

/// `TRAWL_MAX_FILE_SIZE` for `max-file-size`.
fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase().replace('-', "_"))
}

fn given_values(matches: &clap::ArgMatches, id: &str, kind: Kind) -> Vec<String> {
    if kind == Kind::Switch {
        return vec![matches.get_flag(id).to_string()];
    }
    matches
        .get_raw(id)
        .map(|raw| {
            raw.map(|value| value.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A variable's values: a switch takes `true`/`false` (or 1/0, yes/no,
/// on/off), a list is comma-separated (commas inside a glob's `{a,b}` do not
/// split).
fn env_values(text: &str, kind: Kind) -> Result<Vec<String>> {
    Ok(match kind {
        Kind::Switch => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => vec!["true".into()],
            "false" | "0" | "no" | "off" | "" => vec!["false".into()],
            _ => bail!("expected true or false"),
        },
        Kind::Single => vec![text.to_owned()],
        Kind::List => split_list(text)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Splits at the commas outside braces: `*.{png,jpg},dist/` is two values.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    text.split(move |c| {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        c == ',' && depth == 0
    })
}

/// A file value's values: a switch takes a boolean, a single setting a
/// string or a number, a list an array of them (or one).
fn file_values(value: &toml::Value, kind: Kind) -> Result<Vec<String>> {
    let scalar = |value: &toml::Value| -> Result<String> {
        match value {
            toml::Value::String(text) => Ok(text.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(x) => Ok(x.to_string()),
            other => bail!("expected a string or a number, not {}", other.type_str()),
        }
    };
    match (kind, value) {
        (Kind::Switch, toml::Value::Boolean(on)) => Ok(vec![on.to_string()]),
        (Kind::Switch, other) => bail!("expected true or false, not {}", other.type_str()),
        (Kind::List, toml::Value::Array(items)) => items.iter().map(scalar).collect(),
        (Kind::List, single) => Ok(vec![scalar(single)?]),
        (Kind::Single, single) => Ok(vec![scalar(single)?]),
    }
}

/// `value` (a path, or `FORMAT:path`) read from `base` when relative.
fn relative_to(base: &Path, value: &str) -> String {
    let (format, path) = match value.split_once(':') {
        Some((format, path))
            if format.len() > 1 && format.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            (Some(format), path)
        }
        _ => (None, value),
    };
    if path == "-" || Path::new(path).is_absolute() || base.as_os_str().is_empty() {
        return value.to_owned();
    }
    let joined = base.join(path).to_string_lossy().into_owned();
    match format {
        Some(format) => format!("{format}:{joined}"),
        None => joined,
    }
}

/// The flags that give `key` its `values`.
fn flags(key: &str, kind: Kind, values: &[String]) -> Vec<OsString> {
    match kind {
        Kind::Switch if values == ["true"] => vec![format!("--{key}").into()],
        Kind::Switch => Vec::new(),
        _ => values
            .iter()
            .map(|value| format!("--{key}={value}").into())
            .collect(),
    }
}

/// Parses `flags` alone, so that a bad value is blamed on its layer.
/// Checks between settings (conflicts, requirements) wait for the whole.
fn check_values(command: &Command, flags: &[OsString]) -> Result<()> {
    let result = command.clone().try_get_matches_from(
        std::iter::once(OsStr::new("scan")).chain(flags.iter().map(|f| f.as_os_str())),
    );
    match result {
        Err(err)
            if !matches!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument
                    | clap::error::ErrorKind::ArgumentConflict
            ) =>
        {
            bail!("{}", first_line(&err))
        }
        _ => Ok(()),
    }
}

/// clap's message on one line, without its `error: ` and usage lines.
pub(crate) fn first_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

/// The default of `arg` in words, as its help gives it (`[default: …]`),
/// for settings whose default depends on the scan.
fn default_text(arg: &clap::Arg) -> Option<String> {
    let help = arg.get_long_help().or(arg.get_help())?.to_string();
    let start = help.find("[default: ")? + "[default: ".len();
    let end = help[start..].find(']')? + start;
    Some(
        help[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Arguments of `trawl config`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration of `trawl scan` (flags over TRAWL_*
    /// variables over trawl.toml over defaults), credentials masked.
    #[command(
        after_help = "Examples:\n  trawl config show\n  trawl config show --config ci/trawl.toml\n  TRAWL_FORMAT=sarif trawl config show --redact\n  trawl config show > trawl.toml                    a starting point to edit\n\nAny flag of `trawl scan` may follow, to see what a scan with it would use."
    )]
    Show(ShowArgs),
}

/// Arguments of `trawl config show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Flags of `trawl scan` (--config FILE and --no-config included).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "SCAN FLAGS"
    )]
    scan_flags: Vec<OsString>,
}

/// Runs `trawl config`.
pub(crate) fn run(command: ConfigCommand) -> Result<u8> {
    match command {
        ConfigCommand::Show(args) => {
            let cwd = std::env::current_dir().context("cannot read the working folder")?;
            let layered = layer(&args.scan_flags, &|name| std::env::var(name).ok(), &cwd)?;
            // The whole must parse, as a scan would.
            scan_command()
                .try_get_matches_from(
                    std::iter::once(OsString::from("scan")).chain(layered.args.iter().cloned()),
                )
                .map_err(|err| anyhow!("{}", first_line(&err)))?;
            let vars: Vec<(String, String)> = std::env::vars().collect();
            print!("{}", show(&layered, &vars));
            Ok(crate::scan::EXIT_CLEAN)
        }
    }
}

/// The effective configuration as TOML that a `trawl.toml` may hold, each
/// setting with where it comes from; store credentials in `vars` listed
/// masked.
pub(crate) fn show(layered: &Layered, vars: &[(String, String)]) -> String {
    let mut out = String::new();
    let file = match &layered.file {
        Some(path) => path.display().to_string(),
        None => "no file".to_owned(),
    };
    let _ = writeln!(
        out,
        "# The settings of `trawl scan`: flags over TRAWL_* variables over\n# the file ({file}) over defaults.\n"
    );
    for setting in &layered.settings {
        let line = match (&setting.source, setting.kind) {
            (Source::Default, Kind::Switch) => format!("{} = false", setting.key),
            (Source::Default, _) if setting.values.is_empty() => {
                let _ = match &setting.default {
                    Some(default) => writeln!(out, "# {} = (default: {default})", setting.key),
                    None => writeln!(out, "# {} = (not set)", setting.key),
                };
                continue;
            }
            (_, Kind::Switch) => format!("{} = {}", setting.key, setting.values[0]),
            (_, Kind::Single) => format!("{} = {}", setting.key, quoted(&setting.values[0])),
            (_, Kind::List) => {
                let items: Vec<String> = setting.values.iter().map(|v| quoted(v)).collect();
                format!("{} = [{}]", setting.key, items.join(", "))
            }
        };
        let from = match &setting.source {
            Source::CommandLine => "the command line".to_owned(),
            Source::Env(variable) => variable.clone(),
            Source::File => "the file".to_owned(),
            Source::Default => "default".to_owned(),
        };
        let _ = writeln!(out, "{line:<40} # {from}");
    }
    let credentials: Vec<(String, String)> = vars
        .iter()
        .filter(|(name, _)| is_store_variable(name))
        .map(|(name, value)| (name.clone(), mask(name, value)))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    if !credentials.is_empty() {
        let _ = writeln!(out, "\n# Store settings from the environment (masked):");
        for (name, value) in credentials {
            let _ = writeln!(out, "#   {name}={value}");
        }
    }
    out
}

/// A TOML value: a number as is, anything else a string, with
/// credentials in URLs removed.
fn quoted(value: &str) -> String {
    if value.parse::<i64>().is_ok() {
        return value.to_owned();
    }
    let value = if value.contains("://") {
        redact_url(value)
    } else {
        value.to_owned()
    };
    toml::Value::String(value).to_string()
}

/// The variables the stores and the queue read.
fn is_store_variable(name: &str) -> bool {
    ["AWS_", "GOOGLE_", "AZURE_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name == "DATABASE_URL"
}

/// A variable's value as it may be shown: a secret as `****`, an id by its
/// first 4 characters, a URL without its credentials, anything else as is.
fn mask(name: &str, value: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if value.contains("://") {
        return redact_url(value);
    }
    if upper.ends_with("_ID") {
        let head: String = value.chars().take(4).collect();
        return if head.len() < value.len() {
            format!("{head}…")
        } else {
            "****".into()
        };
    }
    let secret = ["SECRET", "TOKEN", "PASSWORD", "SAS", "KEY", "CREDENTIAL"]
        .iter()
        .any(|word| upper.contains(word));
    if secret {
        "****".into()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn layered(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Layered> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = file {
            std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        }
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        layer(&os(args), &|name| env.get(name).cloned(), dir.path())
    }

    fn setting<'l>(layered: &'l Layered, key: &str) -> &'l Setting {
        layered.settings.iter().find(|s| s.key == key).unwrap()
    }

    #[test]
    fn the_command_line_wins_over_the_environment_over_the_file() {
        let file = Some("format = \"csv\"\nredact = true\nchunk-size = \"1MiB\"\n");
        let env = [("TRAWL_FORMAT", "json"), ("TRAWL_CHUNK_SIZE", "2MiB")];
        let all = layered(&[".", "--format", "sarif"], &env, file).unwrap();
        assert_eq!(setting(&all, "format").values, ["sarif"]);
        assert_eq!(setting(&all, "format").source, Source::CommandLine);
        assert_eq!(setting(&all, "chunk-size").values, ["2MiB"]);
        assert_eq!(
            setting(&all, "chunk-size").source,
            Source::Env("TRAWL_CHUNK_SIZE".into())
        );
        assert_eq!(setting(&all, "redact").source, Source::File);
        assert_eq!(
            all.args,
            os(&["--redact", "--chunk-size=2MiB", ".", "--format", "sarif"])
        );
        let untouched = layered(&["."], &[], None).unwrap();
        assert_eq!(setting(&untouched, "format").source, Source::Default);
        assert_eq!(untouched.args, os(&["."]));
    }

    #[test]
    fn an_unknown_key_names_the_file_the_key_and_the_nearest_key() {
        let err = layered(&["."], &[], Some("max_file_size = \"1MiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("trawl.toml: unknown key `max_file_size`"),
            "{err}"
        );
        assert!(err.contains("did you mean `max-file-size`?"), "{err}");
        let err = layered(&["."], &[], Some("zzzzzz = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the keys are the long flags"), "{err}");
    }

    #[test]
    fn bad_values_are_blamed_on_their_layer() {
        let err = format!(
            "{:#}",
            layered(&["."], &[], Some("chunk-size = \"lots\"\n")).unwrap_err()
        );
        assert!(err.contains("trawl.toml: key `chunk-size`"), "{err}");
        assert!(err.contains("lots"), "{err}");
        let err = format!(
            "{:#}",
            layered(&["."], &[("TRAWL_FORMAT", "xml")], None).unwrap_err()
        );
        assert!(err.contains("TRAWL_FORMAT"), "{err}");
        let err = format!(
            "{:#}",
            layered(&["."], &[("TRAWL_REDACT", "maybe")], None).unwrap_err()
        );
        assert!(
            err.contains("TRAWL_REDACT=\"maybe\": expected true or false"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            layered(&["."], &[], Some("redact = \"yes\"\n")).unwrap_err()
        );
        assert!(err.contains("expected true or false, not string"), "{err}");
        let err = format!(
            "{:#}",
            layered(&["."], &[], Some("format = [")).unwrap_err()
        );
        assert!(err.contains("trawl.toml"), "{err}");
    }

    #[test]
    fn lists_come_whole_from_one_layer_and_paths_from_the_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ci.toml");
        std::fs::write(
            &file,
            "rules = [\"team.toml\", \"/etc/trawl/more.toml\"]\noutput = [\"sarif:out/r.sarif\", \"jsonl:-\"]\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let from_file = layered(&[".", "--config", config], &[], None).unwrap();
        let base = dir.path().to_str().unwrap();
        assert_eq!(
            setting(&from_file, "rules").values,
            [format!("{base}/team.toml"), "/etc/trawl/more.toml".into()]
        );
        assert_eq!(
            setting(&from_file, "output").values,
            [format!("sarif:{base}/out/r.sarif"), "jsonl:-".into()]
        );
        let env = [("TRAWL_OUTPUT", "csv:a.csv, json:b.json")];
        let from_env = layered(&[".", "--config", config], &env, None).unwrap();
        assert_eq!(
            setting(&from_env, "output").values,
            ["csv:a.csv", "json:b.json"]
        );
        let flag = layered(&[".", "--config", config, "-o", "x.jsonl"], &env, None).unwrap();
        assert_eq!(setting(&flag, "output").values, ["x.jsonl"]);
        let globs = [("TRAWL_EXCLUDE", "*.{png,jpg},dist/,,{a,{b,c}}/x")];
        assert_eq!(
            setting(&layered(&["."], &globs, None).unwrap(), "exclude").values,
            ["*.{png,jpg}", "dist/", "{a,{b,c}}/x"]
        );
    }

    /// `trawl scan`'s matches for the layered arguments.
    fn parsed(layered: &Layered) -> clap::ArgMatches {
        scan_command()
            .try_get_matches_from(
                std::iter::once(OsString::from("scan")).chain(layered.args.clone()),
            )
            .unwrap()
    }

    #[test]
    fn a_negation_or_a_conflicting_flag_overrules_the_lower_layers() {
        let file = Some("sort = true\nredact = true\nskip-hidden = true\n");
        let env = [("TRAWL_QUIET", "true")];
        let all = layered(
            &[".", "--no-sort", "--no-quiet", "--show-secrets"],
            &env,
            file,
        )
        .unwrap();
        for key in ["sort", "quiet"] {
            assert_eq!(setting(&all, key).values, ["false"], "{key}");
            assert_eq!(setting(&all, key).source, Source::CommandLine, "{key}");
        }
        assert_eq!(setting(&all, "redact").source, Source::Default);
        assert_eq!(setting(&all, "skip-hidden").source, Source::File);
        let matches = parsed(&all);
        for (id, on) in [
            ("sort", false),
            ("quiet", false),
            ("redact", false),
            ("show_secrets", true),
            ("skip_hidden", true),
        ] {
            assert_eq!(matches.get_flag(id), on, "{id}");
        }

        // Of both forms on the command line, the last wins.
        let again = layered(&[".", "--no-sort", "--sort", "-q", "--no-quiet"], &[], file).unwrap();
        let matches = parsed(&again);
        assert!(matches.get_flag("sort") && !matches.get_flag("quiet"));
        assert_eq!(setting(&again, "sort").source, Source::CommandLine);
    }

    #[test]
    fn every_switch_has_a_negation_and_negations_are_no_settings() {
        let command = scan_command();
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let Some(long) = arg.get_long() else { continue };
            if kind(arg) == Some(Kind::Switch)
                && !long.starts_with("no-")
                && !FILE_FLAGS.contains(&arg.get_id().as_str())
            {
                assert!(negation(&command, arg).is_some(), "no --no-{long}");
            }
        }
        let err = layered(&["."], &[], Some("no-sort = true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `no-sort`"), "{err}");
    }

    #[test]
    fn the_file_is_found_named_or_left_out() {
        let text = Some("format = \"csv\"\n");
        let found = layered(&["."], &[], text).unwrap();
        assert!(found.file.is_some());
        assert_eq!(setting(&found, "format").values, ["csv"]);
        let ignored = layered(&[".", "--no-config"], &[], text).unwrap();
        assert_eq!(
            (
                ignored.file.as_ref(),
                setting(&ignored, "format").source.clone()
            ),
            (None, Source::Default)
        );
        let err = format!(
            "{:#}",
            layered(&[".", "--config", "/nonexistent/t.toml"], &[], None).unwrap_err()
        );
        assert!(
            err.contains("cannot read the configuration file /nonexistent/t.toml"),
            "{err}"
        );
    }

    #[test]
    fn credentials_are_masked_in_the_shown_configuration() {
        let layered = layered(
            &[".", "--endpoint", "http://user:hunter2@127.0.0.1:9000"],
            &[],
            None,
        )
        .unwrap();
        let vars = [
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("AWS_REGION", "eu-west-1"),
            ("DATABASE_URL", "postgres://app:s3cret@db/trawl"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let shown = show(&layered, &vars);
        for secret in [
            "hunter2",
            "IOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI",
            "s3cret",
            "/root",
        ] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("AWS_ACCESS_KEY_ID=AKIA…"), "{shown}");
        assert!(shown.contains("AWS_SECRET_ACCESS_KEY=****"), "{shown}");
        assert!(shown.contains("AWS_REGION=eu-west-1"), "{shown}");
        assert!(
            shown.contains("# chunk-size = (default: 256KiB for local paths, 4MiB for URLs)"),
            "{shown}"
        );
        assert!(shown.contains("format = \"jsonl\""), "{shown}");
    }
}
