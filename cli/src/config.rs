//! The configuration file, `annal.toml`.
//!
//! It is looked up next to the data directory (in the directory's parent) or
//! given with `--config`. The store's options are top-level keys; later
//! features add their own tables (`[retention]`, `[server]`, ...) as new
//! `Option<Section>` fields of [`Config`]. Unknown keys and bad values are
//! rejected with the key's name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use annal::{Durability, Options};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::error::{CliError, CliResult};

/// Name of the configuration file looked up next to the data directory.
pub const FILE_NAME: &str = "annal.toml";

/// Default sync interval when `durability = "interval"` gives none.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 100;

/// The contents of `annal.toml`. Every key is optional; a missing key keeps the library's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// When appends are synced: always, never, or at an interval.
    pub durability: Option<DurabilityMode>,
    /// With `durability = "interval"`: at most how often to sync, in milliseconds.
    pub sync_interval_ms: Option<u64>,
    /// Size at which a segment is sealed.
    pub segment_size: Option<ByteSize>,
    /// Largest data plus metadata of one event.
    pub max_event_size: Option<ByteSize>,
    /// Most events in one append.
    pub max_events_per_append: Option<u64>,
    /// Largest encoded size of one append.
    pub max_append_size: Option<ByteSize>,
    /// Appends stop while fewer bytes than this would stay free on the disk.
    pub disk_reserve: Option<ByteSize>,
    /// Top-level metadata keys whose string values are indexed, so that
    /// `--metadata key=value` and `metadata.key=value` are index lookups.
    pub indexed_metadata: Option<Vec<String>>,
    /// `[retention]`: what scavenging removes and how often it runs.
    pub retention: Option<annal::RetentionPolicy>,
    /// `[compression]`: zstd compression of sealed segments (on unless
    /// `enabled = false`).
    pub compression: Option<CompressionConfig>,
    /// `[server]`: settings of `annal serve`.
    pub server: Option<annal_server::ServerConfig>,
    /// `[[forward]]`: forwarders that `annal serve` runs in the background.
    #[serde(default)]
    pub forward: Vec<ForwardConfig>,
}

/// The `[compression]` section: the library's settings, and `enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressionConfig {
    /// False keeps sealed segments as written (compression is on by default).
    pub enabled: bool,
    /// zstd level.
    pub level: i32,
    /// Uncompressed bytes of frames per block.
    pub block_size: usize,
    /// Train a zstd dictionary from the store's own events.
    pub dictionary: bool,
    /// Size of that dictionary in bytes.
    pub dictionary_size: usize,
    /// Seal the active segment for compression once it holds this many bytes and is idle or old.
    pub seal_min_bytes: u64,
    /// ... after this many milliseconds without an append (0: never).
    pub seal_idle_ms: u64,
    /// ... once its oldest event is this many milliseconds old (0: never).
    pub seal_after_ms: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        let d = annal::CompressionOptions::default();
        CompressionConfig {
            enabled: true,
            level: d.level,
            block_size: d.block_size,
            dictionary: d.dictionary,
            dictionary_size: d.dictionary_size,
            seal_min_bytes: d.seal_min_bytes,
            seal_idle_ms: d.seal_idle_ms,
            seal_after_ms: d.seal_after_ms,
        }
    }
}

impl CompressionConfig {
    /// The library's settings, or `None` when compression is turned off.
    pub fn options(&self) -> Option<annal::CompressionOptions> {
        self.enabled.then_some(annal::CompressionOptions {
            level: self.level,
            block_size: self.block_size,
            dictionary: self.dictionary,
            dictionary_size: self.dictionary_size,
            seal_min_bytes: self.seal_min_bytes,
            seal_idle_ms: self.seal_idle_ms,
            seal_after_ms: self.seal_after_ms,
        })
    }
}

/// The `durability` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    /// Sync before acknowledging each append (the default).
    Always,
    /// Sync only when sealing a segment and closing.
    Never,
    /// Sync at most every `sync_interval_ms`.
    Interval,
}

impl<'de> Deserialize<'de> for DurabilityMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurabilityMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"always\", \"never\" or \"interval\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurabilityMode, E> {
                match v {
                    "always" => Ok(DurabilityMode::Always),
                    "never" => Ok(DurabilityMode::Never),
                    "interval" => Ok(DurabilityMode::Interval),
                    _ => Err(E::custom(format!(
                        "{v:?} is not a durability; expected \"always\", \"never\" or \"interval\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: an integer, or a string with a unit such as `"64MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `"64MiB"`, `"4 KiB"`, `"1GB"`, `"4096"`, `"4096B"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size (expected a number of bytes, or a number with a unit such as \"64MiB\")"
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, such as 67108864 or \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative ({v})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Config {
    /// Parses the text of a configuration file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> CliResult<Config> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
            CliError::msg(format!("{}: {at}{}", path.display(), e.message().trim_end()))
        })
    }

    /// Loads the configuration: the file given with `--config` (which must
    /// exist), else `annal.toml` next to the data directory if there is one,
    /// else the defaults. Returns it with the path it came from.
    pub fn load(explicit: Option<&Path>, data_dir: &Path) -> CliResult<(Config, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = default_path(data_dir);
                if !p.is_file() {
                    return Ok((Config::default(), None));
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::msg(format!("reading configuration {}: {e}", path.display())))?;
        let config = Config::parse(&text, &path)?;
        config.options().map_err(|e| e.context(path.display()))?;
        Ok((config, Some(path)))
    }

    /// The store options this configuration asks for. The values are checked
    /// by the library ([`Options::validate`]), whose error names the option;
    /// here only what is the file's own: the durability keys, and numbers too
    /// large for this machine.
    pub fn options(&self) -> CliResult<Options> {
        let mut o = Options::default();
        let bad = |key: &str, why: String| CliError::msg(format!("{key}: {why}"));
        match (self.durability, self.sync_interval_ms) {
            (Some(DurabilityMode::Interval), ms) => {
                let ms = ms.unwrap_or(DEFAULT_SYNC_INTERVAL_MS);
                o.durability = Durability::Interval(Duration::from_millis(ms));
            }
            (_, Some(_)) => {
                return Err(bad(
                    "sync_interval_ms",
                    "applies only with durability = \"interval\"".into(),
                ));
            }
            (Some(DurabilityMode::Never), None) => o.durability = Durability::Never,
            (Some(DurabilityMode::Always) | None, None) => o.durability = Durability::Always,
        }
        let usize_of = |key: &str, n: u64| usize::try_from(n).map_err(|_| bad(key, format!("{n} is too large")));
        if let Some(ByteSize(n)) = self.segment_size {
            o.segment_size = n;
        }
        if let Some(ByteSize(n)) = self.max_event_size {
            o.max_event_size = usize_of("max_event_size", n)?;
        }
        if let Some(n) = self.max_events_per_append {
            o.max_events_per_append = usize_of("max_events_per_append", n)?;
        }
        if let Some(ByteSize(n)) = self.max_append_size {
            o.max_append_size = usize_of("max_append_size", n)?;
        }
        if let Some(ByteSize(n)) = self.disk_reserve {
            o.disk_reserve = n;
        }
        if let Some(fields) = &self.indexed_metadata {
            o.indexed_metadata = fields.clone();
        }
        if let Some(r) = &self.retention {
            o.retention = r.clone();
        }
        o.compression = match self.compression {
            None => Some(annal::CompressionOptions::default()),
            Some(c) => c.options(),
        };
        o.validate()?;
        Ok(o)
    }
}

/// `annal.toml` in the data directory's parent.
pub fn default_path(data_dir: &Path) -> PathBuf {
    let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    abs.parent().unwrap_or(Path::new("/")).join(FILE_NAME)
}

/// "line N, key `k`: " for the byte offset of an error in a TOML text.
fn locate(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    // The key is what precedes `=` on that line, within the last [table] header above it.
    let header = line.trim_start().starts_with('[');
    let key = match line.find('=') {
        Some(eq) if !header => line[..eq].trim().to_string(),
        _ => line.trim().trim_matches(|c| c == '[' || c == ']').trim().to_string(),
    };
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (table, key.is_empty()) {
        (_, true) => return format!("line {line_no}: "),
        (Some(t), false) if !header => format!("{t}.{key}"),
        _ => key,
    };
    format!("line {line_no}, key `{key}`: ")
}

/// A `[[forward]]` section of annal.toml.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The forwarder's name.
    pub name: String,
    /// The target URL.
    pub to: String,
    /// Bearer token for an annal+http(s) target.
    #[serde(default)]
    pub token: Option<String>,
    /// Only events of these types.
    #[serde(default)]
    pub types: Vec<String>,
    /// Only events carrying all these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Only events of streams starting with this.
    #[serde(default)]
    pub stream_prefix: Option<String>,
    /// Only events of streams matching this regular expression.
    #[serde(default)]
    pub stream_regex: Option<String>,
    /// `"start"`, `"end"` or a position.
    #[serde(default)]
    pub start: Option<StartValue>,
    /// Events per batch.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Events sent and not yet confirmed, at most.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// `"wait"` (the default) or `"ignore"`.
    #[serde(default)]
    pub retention: Option<String>,
    /// Whether the forwarder's calls to its target run in the idle scheduling class (default false).
    #[serde(default)]
    pub idle_priority: Option<bool>,
    /// Niceness of the forwarder's thread, 0 to 19 (default 10).
    #[serde(default)]
    pub nice: Option<u8>,
}

/// `start = "end"` or `start = 42`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum StartValue {
    /// A position.
    Position(u64),
    /// `start`, `end` or a position in a string.
    Text(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let p = Path::new("annal.toml");
        let e = Config::parse("segment_size = \"64MiB\"\ndurability = \"sometimes\"\n", p).unwrap_err();
        assert!(e.message.contains("key `durability`"), "{}", e.message);
        let e = Config::parse("colour = 1\n", p).unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = Config::parse("segment_size = \"64 furlongs\"\n", p).unwrap_err();
        assert!(e.message.contains("key `segment_size`"), "{}", e.message);
        let c = Config::parse(
            "durability = \"interval\"\nsync_interval_ms = 50\nsegment_size = \"1MiB\"\n",
            p,
        )
        .unwrap();
        let o = c.options().unwrap();
        assert_eq!(o.durability, Durability::Interval(Duration::from_millis(50)));
        assert_eq!(o.segment_size, 1 << 20);
        let c = Config::parse("sync_interval_ms = 50\n", p).unwrap();
        assert!(c.options().unwrap_err().message.contains("sync_interval_ms"));
        // Values out of range are the library's to refuse, with its message and exit code 1.
        let c = Config::parse("segment_size = 10\n", p).unwrap();
        let e = c.options().unwrap_err();
        assert_eq!(e.code, crate::error::ERROR);
        assert_eq!(
            e.message,
            "invalid option segment_size: 10 bytes; must be between 4 KiB and 1 TiB"
        );
        // Indexed metadata fields go to the library; a bad name is its to refuse.
        let c = Config::parse("indexed_metadata = [\"actor\", \"tenant\"]\n", p).unwrap();
        assert_eq!(c.options().unwrap().indexed_metadata, vec!["actor", "tenant"]);
        let c = Config::parse("indexed_metadata = [\"\"]\n", p).unwrap();
        assert!(c.options().unwrap_err().message.contains("indexed_metadata"));
        // Compression is on without a section, off with `enabled = false`.
        let on = Config::parse("", p).unwrap().options().unwrap();
        assert_eq!(on.compression, Some(annal::CompressionOptions::default()));
        let off = Config::parse("[compression]\nenabled = false\n", p).unwrap();
        assert_eq!(off.options().unwrap().compression, None);
        let c = Config::parse("[compression]\nlevel = 9\n", p).unwrap();
        assert_eq!(c.options().unwrap().compression.map(|c| c.level), Some(9));
        // When the compressor seals a small store's active segment.
        let c = Config::parse(
            "[compression]\nseal_min_bytes = 1048576\nseal_idle_ms = 0\nseal_after_ms = 3600000\n",
            p,
        )
        .unwrap();
        let c = c.options().unwrap().compression.unwrap();
        assert_eq!(
            (c.seal_min_bytes, c.seal_idle_ms, c.seal_after_ms),
            (1 << 20, 0, 3_600_000)
        );
        let c = Config::parse("[compression]\ndictionary_size = 1\n", p).unwrap();
        let e = c.options().unwrap_err();
        assert!(
            e.message
                .starts_with("invalid option compression.dictionary_size: 1 bytes"),
            "{}",
            e.message
        );
    }
}
