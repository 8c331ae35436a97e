//! What every command shares: the data directory, the configuration, opening the store.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::{Options, Store};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::error::{CliError, CliResult};

/// The data directory and the options to open it with.
pub struct Ctx {
    /// The data directory, as given.
    pub data: PathBuf,
    /// The store options the configuration asks for.
    pub options: Options,
    /// The `[server]` section, for `annal serve`.
    pub server: Option<annal_server::ServerConfig>,
    /// The `[[forward]]` sections, run in the background by `annal serve`.
    pub forward: Vec<crate::config::ForwardConfig>,
}

impl Ctx {
    /// Loads the configuration for `data`.
    pub fn new(data: PathBuf, config_file: Option<&Path>) -> CliResult<Ctx> {
        let (config, path) = Config::load(config_file, &data)?;
        let options = config.options().map_err(|e| match &path {
            Some(p) => e.context(p.display()),
            None => e,
        })?;
        Ok(Ctx {
            data,
            options,
            server: config.server,
            forward: config.forward,
        })
    }

    /// Opens the store for a command that writes: the directory is created if missing.
    pub fn open_write(&self) -> CliResult<Store> {
        self.open_write_with(|o| o)
    }

    /// Like [`Ctx::open_write`], with the configured options adjusted by `adjust`.
    pub fn open_write_with(&self, adjust: impl FnOnce(Options) -> Options) -> CliResult<Store> {
        if self.data.is_dir() {
            self.refuse_foreign()?;
        }
        let options = adjust(self.options.clone().create_if_missing(true));
        Ok(Store::open(&self.data, options)?)
    }

    /// Opens the store for `annal serve`: for writing, or, if damage keeps it
    /// from opening, degraded (reads of the intact data only).
    pub fn open_serve(&self) -> CliResult<Store> {
        if self.data.is_dir() {
            self.refuse_foreign()?;
        }
        let options = self.options.clone().create_if_missing(true);
        Ok(Store::open_or_degraded(&self.data, options)?)
    }

    /// Entries of the data directory that are not the lock file.
    fn entries(&self) -> CliResult<Vec<String>> {
        let dir = &self.data;
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| CliError::msg(format!("listing {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n != "LOCK" && n != "annal.meta.tmp")
            .collect();
        names.sort();
        Ok(names)
    }

    /// Refuses a directory that holds files but no store, before the store
    /// would leave its lock file there.
    fn refuse_foreign(&self) -> CliResult {
        if self.data.join(annal::layout::META_FILE).exists() {
            return Ok(());
        }
        let names = self.entries()?;
        let Some(first) = names.first() else {
            return Ok(());
        };
        let hint = if names.iter().any(|n| n.ends_with(".seg")) {
            "; it holds segments: if it is a damaged store, `annal repair` can rebuild it"
        } else {
            ""
        };
        Err(CliError::msg(format!(
            "{} is not an annal data directory: it holds {first:?} but no {}{hint}",
            self.data.display(),
            annal::layout::META_FILE
        )))
    }

    /// Checks that the data directory holds a store, without creating anything.
    pub fn require_store(&self) -> CliResult {
        let dir = &self.data;
        if !dir.exists() {
            return Err(CliError::msg(format!(
                "no store at {}: the directory does not exist (give the data directory with --data DIR; \
                 a store is created by the first append or import)",
                dir.display()
            )));
        }
        if !dir.is_dir() {
            return Err(CliError::msg(format!("{} is not a directory", dir.display())));
        }
        if !dir.join(annal::layout::META_FILE).exists() && self.entries()?.is_empty() {
            return Err(CliError::msg(format!(
                "no store at {}: the directory is empty (a store is created by the first append or import)",
                dir.display()
            )));
        }
        self.refuse_foreign()
    }

    /// Opens an existing store for a command that only reads: no lock, nothing
    /// written (so a store a server holds, or one on a read-only mount, can be
    /// read), damage stepped around; never creates the directory.
    pub fn open_read(&self) -> CliResult<Store> {
        self.require_store()?;
        let options = self.options.clone().create_if_missing(false);
        Ok(Store::open_read_only(&self.data, options)?)
    }

    /// Opens an existing store as its one owner (taking the lock), for commands
    /// that follow it live or copy it.
    pub fn open_owned(&self) -> CliResult<Store> {
        self.require_store()?;
        let options = self.options.clone().create_if_missing(false);
        Ok(Store::open(&self.data, options)?)
    }
}

/// True when progress should be drawn (stderr is a terminal).
pub fn interactive() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar of `len` steps on stderr, or a hidden one when stderr is not a terminal.
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let template = format!("{{spinner}} {{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A byte-count progress bar (for reading a file of known size).
pub fn progress_bytes(len: u64) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({eta} left)") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A spinner with a message, or a hidden one when stderr is not a terminal.
pub fn spinner(msg: impl Into<String>) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}
