//! Every `shiplogd` setting is declared once (`shiplog::server::config::Settings`), so
//! `--help`, the TOML keys, the environment variables, the shell completions, the man page and
//! the table in `docs/operations.md` all name the same settings.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeSet;
use std::process::Command;

/// Flags of `shiplogd` that are not settings: they act and exit, or name the file of settings.
const NOT_SETTINGS: [&str; 4] = ["help", "version", "completions", "man-page"];

fn shiplogd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shiplogd"))
        .args(args)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(out.status.success(), "shiplogd {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The settings `--help` lists, with `config`.
fn help_settings() -> BTreeSet<String> {
    let help = shiplogd(&["--help"]);
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("-h, ").unwrap_or(line);
            let line = line.strip_prefix("-V, ").unwrap_or(line);
            let flag = line.strip_prefix("--")?;
            Some(flag.split([' ', '=']).next()?.to_owned())
        })
        .filter(|flag| !NOT_SETTINGS.contains(&flag.as_str()))
        .collect()
}

/// The flags of the settings table of `docs/operations.md` (rows that start with a flag).
fn documented_settings() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    docs.lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .map(|rest| rest.split('`').next().unwrap().to_owned())
        .collect()
}

fn toml_keys() -> BTreeSet<String> {
    shiplog::server::config::keys()
        .iter()
        .map(|&key| key.to_owned())
        .collect()
}

#[test]
fn help_toml_keys_and_the_operations_guide_name_the_same_settings() {
    let help = help_settings();
    assert!(help.contains("max-clients"), "{help:?}");
    let mut keys = toml_keys();
    // The file cannot name another file: `--config` is the one setting without a key.
    assert!(keys.insert("config".to_owned()), "config is not a TOML key");
    assert_eq!(
        help.symmetric_difference(&keys).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "--help and the TOML keys differ"
    );
    let documented = documented_settings();
    assert_eq!(
        help.symmetric_difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "--help and docs/operations.md differ"
    );
}

#[test]
fn every_setting_has_its_environment_variable() {
    let help = shiplogd(&["--help"]);
    for setting in help_settings() {
        let variable = format!(
            "[env: SHIPLOG_{}=]",
            setting.to_uppercase().replace('-', "_")
        );
        assert!(help.contains(&variable), "--help lacks {variable}");
    }
}

#[test]
fn completions_and_man_page_are_generated_from_the_same_settings() {
    let settings = help_settings();
    for shell in ["bash", "zsh", "fish"] {
        let script = shiplogd(&["--completions", shell]);
        for setting in &settings {
            // fish names long options without their dashes (`-l max-clients`).
            assert!(
                script.contains(setting.as_str()),
                "{shell} completions lack {setting}"
            );
        }
        for value in ["buffered", "applied", "async", "json"] {
            assert!(script.contains(value), "{shell} completions lack {value}");
        }
    }
    let man = shiplogd(&["--man-page"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH shiplogd"),
        "{man}"
    );
    for setting in &settings {
        // roff escapes each dash.
        let flag = format!("\\-\\-{}", setting.replace('-', "\\-"));
        assert!(man.contains(&flag), "the man page lacks {flag}");
    }
    assert!(
        man.contains("SHIPLOG_MAX_CLIENTS"),
        "the man page names the variables"
    );
}
