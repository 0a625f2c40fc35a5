//! `cargo xtask images`: the `marketplace` and `marketplace-operator`
//! container images, built the way CI can build them on these machines.
//!
//! Debian's podman builds images without a registry as long as nothing has
//! to be pulled, so the static binaries are built here with Cargo, staged in
//! the build context and built into the `runtime` stage of each Dockerfile
//! through its `prebuilt` stage (the Rust build stage is skipped, and
//! `--pull=never` proves it). Each image is then checked: its metadata
//! (non-root user, entrypoint, exposed ports, size) from `podman image
//! inspect`, and its files from the layers themselves: the binary, its
//! directories and the data directory, and nothing else, so no shell.
//!
//! Podman keeps its images under the cache directory (`podman/`), never in
//! the repository or the system's storage.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cache::Cache;
use crate::{install, process};

/// The Cargo profile of the image binaries: release, stripped (see
/// `[profile.image]` in the workspace manifest).
const PROFILE: &str = "image";

/// Given explicitly so that `RUSTFLAGS` reach only the binaries: build
/// scripts and proc-macros, built for the host, stay dynamic.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// glibc linked into the binary, which then needs nothing from the image.
const RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// Where the binaries are staged, relative to the build context (the
/// workspace root): the Dockerfiles' default `BINARY` paths. Under the
/// ignored `target/`, and let into the context by `.dockerignore`.
const STAGING_DIR: &str = "target/images";

/// The largest an image may be, uncompressed as `podman image inspect`
/// reports it (30 MB).
const MAX_IMAGE_BYTES: u64 = 30_000_000;

/// The user and group both images run as: `nonroot` of the distroless images.
const USER: &str = "65532:65532";
const USER_ID: u64 = 65532;

/// The tag given to the images built here.
const TAG: &str = "dev";

/// One image and what it must look like.
#[derive(Debug)]
pub(crate) struct ImageSpec {
    pub(crate) repository: &'static str,
    pub(crate) dockerfile: &'static str,
    /// The Cargo package and the binary it builds (the Dockerfile's
    /// default `BINARY` is `target/images/<binary>`).
    pub(crate) package: &'static str,
    pub(crate) binary: &'static str,
    pub(crate) entrypoint: &'static [&'static str],
    /// Default arguments; empty for none.
    pub(crate) cmd: &'static [&'static str],
    /// TCP ports.
    pub(crate) exposed_ports: &'static [u16],
    pub(crate) working_dir: &'static str,
    /// Directories the user owns, empty in the image.
    pub(crate) user_dirs: &'static [&'static str],
}

pub(crate) const IMAGES: [ImageSpec; 2] = [
    ImageSpec {
        repository: "ghcr.io/marketplace/marketplace",
        dockerfile: "deploy/images/marketplace.Dockerfile",
        package: "marketplace",
        binary: "marketplace",
        entrypoint: &["/usr/local/bin/marketplace"],
        cmd: &["serve", "--target", "all"],
        exposed_ports: &[8080, 8081, 8082, 8083, 9090],
        working_dir: "/data",
        user_dirs: &["data"],
    },
    ImageSpec {
        repository: "ghcr.io/marketplace/marketplace-operator",
        dockerfile: "deploy/images/operator.Dockerfile",
        package: "marketplace-operator",
        binary: "marketplace-operator",
        entrypoint: &["/usr/local/bin/marketplace-operator"],
        cmd: &[],
        exposed_ports: &[8080],
        working_dir: "",
        user_dirs: &[],
    },
];

impl ImageSpec {
    fn reference(&self) -> String {
        format!("{}:{TAG}", self.repository)
    }

    fn staged_binary(&self) -> String {
        format!("{STAGING_DIR}/{}", self.binary)
    }
}

/// What one image turned out to be.
#[derive(Debug)]
struct Built {
    reference: String,
    binary_bytes: u64,
    image_bytes: u64,
    build_time: Duration,
}

pub(crate) fn run(cache: &Cache) -> Result<()> {
    let started = Instant::now();
    let podman = ensure_podman(cache)?;
    let root = crate::workspace_root();

    let binaries = build_binaries()?;
    let compiled = started.elapsed();

    let staging = root.join(STAGING_DIR);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let podman = Podman::new(podman, cache);
    let mut built = Vec::new();
    let mut failures = Vec::new();
    for image in &IMAGES {
        let binary = binaries.join(image.binary);
        let staged = root.join(image.staged_binary());
        std::fs::copy(&binary, &staged)
            .with_context(|| format!("copying {} to {}", binary.display(), staged.display()))?;
        let building = Instant::now();
        podman.build(image, &root)?;
        let build_time = building.elapsed();
        let (image_bytes, problems) = podman.check(image)?;
        failures.extend(
            problems
                .into_iter()
                .map(|p| format!("{}: {p}", image.reference())),
        );
        built.push(Built {
            reference: image.reference(),
            binary_bytes: std::fs::metadata(&staged)?.len(),
            image_bytes,
            build_time,
        });
    }
    // Each run's images replace the last run's, which are left untagged.
    podman.prune()?;

    println!("{}", table(&built));
    println!(
        "==> timings: binaries {:.1?}, images {:.1?}, total {:.1?}",
        compiled,
        started.elapsed() - compiled,
        started.elapsed()
    );
    if !failures.is_empty() {
        bail!(
            "{} image check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    println!("==> both images pass their checks");
    Ok(())
}

fn ensure_podman(cache: &Cache) -> Result<PathBuf> {
    if let Some(podman) = process::which("podman") {
        return Ok(podman);
    }
    install::apt_install(cache, &["podman"])?;
    process::which("podman").context("podman is not on PATH after installing it")
}

/// Builds both static binaries and returns the directory holding them.
fn build_binaries() -> Result<PathBuf> {
    let packages: Vec<&str> = IMAGES.iter().map(|image| image.package).collect();
    println!(
        "==> building {} (profile {PROFILE}, static, {TARGET})",
        packages.join(" and ")
    );
    let mut args = vec![
        "build",
        "--locked",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
    ];
    for package in &packages {
        args.extend(["-p", package]);
    }
    let mut command = crate::cargo(&args);
    command
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let status = process::run_foreground(command, "cargo build")?;
    if !status.success() {
        bail!("building the image binaries failed ({status})");
    }
    let dir = crate::bench::target_dir()?.join(TARGET).join(PROFILE);
    for image in &IMAGES {
        let binary = dir.join(image.binary);
        let head = read_head(&binary)?;
        if !is_static_elf(&head) {
            bail!(
                "{} is not a static executable: the image has no dynamic loader to run it",
                binary.display()
            );
        }
    }
    Ok(dir)
}

/// Podman with its storage under the cache directory and nothing that needs
/// systemd (cgroups through cgroupfs, events to a file).
#[derive(Debug)]
struct Podman {
    program: PathBuf,
    state: PathBuf,
}

impl Podman {
    fn new(program: PathBuf, cache: &Cache) -> Self {
        Self {
            program,
            state: cache.root().join("podman"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("--root")
            .arg(self.state.join("storage"))
            .arg("--runroot")
            .arg(self.state.join("run"))
            .arg("--tmpdir")
            .arg(self.state.join("tmp"))
            // vfs copies layers where overlay would mount them: slower for
            // large images, but it works wherever podman runs, and these
            // images are a few small layers.
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args);
        command
    }

    /// Builds the image's runtime stage from the staged binary.
    fn build(&self, image: &ImageSpec, context: &Path) -> Result<()> {
        let reference = image.reference();
        let version = format!("VERSION={}", env!("CARGO_PKG_VERSION"));
        let revision = format!("REVISION={}", git_revision(context));
        let binary = format!("BINARY={}", image.staged_binary());
        let mut command = self.command(&[
            "build",
            // Fails at once rather than reach for a registry.
            "--pull=never",
            "--identity-label=false",
            "--target",
            "runtime",
            "--build-arg",
            "BINARY_SOURCE=prebuilt",
            "--build-arg",
            &binary,
            "--build-arg",
            &version,
            "--build-arg",
            &revision,
            "--file",
            image.dockerfile,
            "--tag",
            &reference,
            ".",
        ]);
        command.current_dir(context);
        let log = self
            .state
            .join("logs")
            .join(format!("build-{}.log", image.binary));
        process::run_logged(command, &format!("podman build {reference}"), &log)
    }

    /// Checks the image's metadata and files; returns its size and what is
    /// wrong with it.
    fn check(&self, image: &ImageSpec) -> Result<(u64, Vec<String>)> {
        let reference = image.reference();
        let inspect = process::output(&mut self.command(&["image", "inspect", &reference]))?;
        let inspect: serde_json::Value =
            serde_json::from_str(&inspect).context("parsing `podman image inspect`")?;
        let mut problems = check_metadata(image, &inspect);
        let size = inspect[0]["Size"].as_u64().unwrap_or_default();

        // `podman save` creates the directory, and refuses one that holds
        // anything but an earlier save.
        let saved_dir = self.state.join("saved");
        let saved = saved_dir.join(image.binary);
        if saved.exists() {
            std::fs::remove_dir_all(&saved)
                .with_context(|| format!("removing {}", saved.display()))?;
        }
        std::fs::create_dir_all(&saved_dir)
            .with_context(|| format!("creating {}", saved_dir.display()))?;
        let mut save = self.command(&["save", "--quiet", "--format", "docker-dir", "--output"]);
        save.arg(&saved).arg(&reference);
        process::output(&mut save)?;
        let files = image_files(&saved)?;
        std::fs::remove_dir_all(&saved).with_context(|| format!("removing {}", saved.display()))?;
        problems.extend(check_files(image, &files));
        Ok((size, problems))
    }

    fn prune(&self) -> Result<()> {
        process::output(&mut self.command(&["image", "prune", "--force"]))?;
        Ok(())
    }
}

fn git_revision(repo: &Path) -> String {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(["rev-parse", "HEAD"]);
    process::output(&mut command)
        .map(|out| out.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// What is wrong with an image's configuration, from the JSON `podman image
/// inspect` prints (an array with one image).
pub(crate) fn check_metadata(image: &ImageSpec, inspect: &serde_json::Value) -> Vec<String> {
    let config = &inspect[0]["Config"];
    let mut problems = Vec::new();

    let user = config["User"].as_str().unwrap_or_default();
    if !is_non_root(user) {
        problems.push(format!("runs as root (User {user:?})"));
    } else if user != USER {
        problems.push(format!("runs as {user:?}, not {USER:?}"));
    }

    let entrypoint = strings(&config["Entrypoint"]);
    if entrypoint != image.entrypoint {
        problems.push(format!(
            "entrypoint is {entrypoint:?}, not {:?}",
            image.entrypoint
        ));
    }
    let cmd = strings(&config["Cmd"]);
    if cmd != image.cmd {
        problems.push(format!("command is {cmd:?}, not {:?}", image.cmd));
    }

    let mut ports: Vec<String> = config["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    ports.sort();
    let mut expected: Vec<String> = image
        .exposed_ports
        .iter()
        .map(|port| format!("{port}/tcp"))
        .collect();
    expected.sort();
    if ports != expected {
        problems.push(format!("exposes {ports:?}, not {expected:?}"));
    }

    let working_dir = config["WorkingDir"].as_str().unwrap_or_default();
    if working_dir != image.working_dir {
        problems.push(format!(
            "working directory is {working_dir:?}, not {:?}",
            image.working_dir
        ));
    }

    let title = config["Labels"]["org.opencontainers.image.title"].as_str();
    if title != Some(image.binary) {
        problems.push(format!(
            "label org.opencontainers.image.title is {title:?}, not {:?}",
            image.binary
        ));
    }

    match inspect[0]["Size"].as_u64() {
        Some(size) if size >= MAX_IMAGE_BYTES => problems.push(format!(
            "is {}, not under {}",
            megabytes(size),
            megabytes(MAX_IMAGE_BYTES)
        )),
        Some(_) => {}
        None => problems.push("reports no size".to_owned()),
    }
    problems
}

/// A user (`user`, `user:group`, names or ids) other than root.
fn is_non_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    !name.is_empty() && name != "root" && name.parse::<u64>().ok() != Some(0)
}

fn strings(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default()
}

/// One path in an image's file system, as its layers leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    pub(crate) kind: FileKind,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    /// The first bytes of a regular file (enough for its ELF headers).
    pub(crate) head: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    File,
    Directory,
    /// Links, devices and the like.
    Other(u8),
}

/// How much of each file [`FileEntry::head`] keeps.
const HEAD_BYTES: usize = 64 * 1024;

/// What is wrong with an image's files: it must hold the entrypoint (a
/// static executable owned by root) and its directories, the user's
/// directories, and nothing else.
pub(crate) fn check_files(image: &ImageSpec, files: &BTreeMap<String, FileEntry>) -> Vec<String> {
    let mut problems = Vec::new();
    let binary = image
        .entrypoint
        .first()
        .map(|path| path.trim_start_matches('/'))
        .unwrap_or_default();
    let mut expected: BTreeMap<String, (FileKind, u64)> = BTreeMap::new();
    let mut parent = Path::new(binary).parent();
    while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
        expected.insert(dir.to_string_lossy().into_owned(), (FileKind::Directory, 0));
        parent = dir.parent();
    }
    expected.insert(binary.to_owned(), (FileKind::File, 0));
    for dir in image.user_dirs {
        expected.insert((*dir).to_owned(), (FileKind::Directory, USER_ID));
    }

    for (path, (kind, owner)) in &expected {
        let Some(entry) = files.get(path) else {
            problems.push(format!("has no /{path}"));
            continue;
        };
        if entry.kind != *kind {
            problems.push(format!("/{path} is a {:?}, not a {kind:?}", entry.kind));
        }
        if (entry.uid, entry.gid) != (*owner, *owner) {
            problems.push(format!(
                "/{path} belongs to {}:{}, not {owner}:{owner}",
                entry.uid, entry.gid
            ));
        }
    }
    if let Some(entry) = files.get(binary) {
        if entry.mode & 0o111 == 0 {
            problems.push(format!(
                "/{binary} is not executable (mode {:o})",
                entry.mode
            ));
        }
        if entry.mode & 0o022 != 0 {
            problems.push(format!(
                "/{binary} is writable by others than root (mode {:o})",
                entry.mode
            ));
        }
        if !is_static_elf(&entry.head) {
            problems.push(format!("/{binary} is not a static executable"));
        }
    }
    let extra: Vec<&str> = files
        .keys()
        .filter(|path| !expected.contains_key(*path))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        problems.push(format!(
            "holds more than its binary: /{}",
            extra.join(", /")
        ));
    }
    problems
}

/// True for a 64-bit little-endian ELF executable without a program
/// interpreter, which the kernel runs without any file from the image.
pub(crate) fn is_static_elf(head: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    const ET_EXEC: u16 = 2;
    const ET_DYN: u16 = 3;
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        head.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // 64-bit, little-endian.
    if head.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    if !matches!(u16_at(16), Some(ET_EXEC | ET_DYN)) {
        return false;
    }
    let (Some(offset), Some(size), Some(count)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return false;
    };
    let Ok(offset) = usize::try_from(offset) else {
        return false;
    };
    (0..usize::from(count))
        .all(|i| u32_at(offset + i * usize::from(size)).is_some_and(|kind| kind != PT_INTERP))
}

fn read_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEAD_BYTES);
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(HEAD_BYTES as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// The image's file system, from a `podman save --format docker-dir`
/// directory: its layers applied in order (none of these images deletes a
/// file, so whiteouts are not handled).
fn image_files(saved: &Path) -> Result<BTreeMap<String, FileEntry>> {
    let manifest = std::fs::read_to_string(saved.join("manifest.json"))
        .with_context(|| format!("reading the manifest in {}", saved.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest)?;
    let layers = manifest["layers"]
        .as_array()
        .context("the saved manifest lists no layers")?;
    let mut files = BTreeMap::new();
    for layer in layers {
        let digest = layer["digest"]
            .as_str()
            .and_then(|digest| digest.strip_prefix("sha256:"))
            .context("a layer without a sha256 digest")?;
        let tar =
            std::fs::read(saved.join(digest)).with_context(|| format!("reading layer {digest}"))?;
        for (path, entry) in tar_entries(&tar).with_context(|| format!("reading layer {digest}"))? {
            files.insert(path, entry);
        }
    }
    Ok(files)
}

/// The entries of an uncompressed tar archive, paths without leading `./`
/// or `/` and trailing `/` (the tar crate reads the PAX and GNU long names
/// the Go archive writer of podman uses).
pub(crate) fn tar_entries(tar: &[u8]) -> Result<Vec<(String, FileEntry)>> {
    let mut entries = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("reading a tar archive")? {
        let mut entry = entry.context("reading a tar entry")?;
        let path = entry.path().context("a tar entry with a bad path")?;
        let path = path
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular => FileKind::File,
            tar::EntryType::Directory => FileKind::Directory,
            other => FileKind::Other(other.as_byte()),
        };
        let (mode, uid, gid) = (
            header.mode().context("a bad tar mode")?,
            header.uid().context("a bad tar uid")?,
            header.gid().context("a bad tar gid")?,
        );
        let mut head = Vec::new();
        (&mut entry)
            .take(HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .context("reading a tar entry's data")?;
        if !path.is_empty() {
            entries.push((
                path,
                FileEntry {
                    kind,
                    mode,
                    uid,
                    gid,
                    head,
                },
            ));
        }
    }
    Ok(entries)
}

fn megabytes(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    format!("{mb:.1} MB")
}

fn table(built: &[Built]) -> String {
    let mut out = format!(
        "{:<46} {:>10} {:>10} {:>8}",
        "image", "binary", "image", "build"
    );
    for image in built {
        let _ = write!(
            out,
            "\n{:<46} {:>10} {:>10} {:>7.1}s",
            image.reference,
            megabytes(image.binary_bytes),
            megabytes(image.image_bytes),
            image.build_time.as_secs_f64()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `podman image inspect ghcr.io/marketplace/marketplace:dev`, from a
    /// run of `cargo xtask images`.
    const INSPECT: &str = include_str!("images/podman-inspect-marketplace.json");

    fn inspect() -> serde_json::Value {
        serde_json::from_str(INSPECT).unwrap()
    }

    fn marketplace() -> &'static ImageSpec {
        &IMAGES[0]
    }

    #[test]
    fn the_inspected_marketplace_image_passes_every_metadata_check() {
        assert_eq!(
            check_metadata(marketplace(), &inspect()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_image_running_as_root_fails() {
        for user in ["", "0", "root", "0:0", "root:65532"] {
            let mut inspect = inspect();
            inspect[0]["Config"]["User"] = user.into();
            let problems = check_metadata(marketplace(), &inspect);
            assert_eq!(
                problems,
                [format!("runs as root (User {user:?})")],
                "User {user:?}"
            );
        }
    }

    #[test]
    fn an_image_running_as_another_non_root_user_fails() {
        let mut inspect = inspect();
        inspect[0]["Config"]["User"] = "1000".into();
        assert_eq!(
            check_metadata(marketplace(), &inspect),
            ["runs as \"1000\", not \"65532:65532\""]
        );
    }

    #[test]
    fn a_different_entrypoint_or_command_fails() {
        let mut inspect = inspect();
        inspect[0]["Config"]["Entrypoint"] = serde_json::json!(["/bin/sh", "-c"]);
        inspect[0]["Config"]["Cmd"] = serde_json::Value::Null;
        assert_eq!(
            check_metadata(marketplace(), &inspect),
            [
                "entrypoint is [\"/bin/sh\", \"-c\"], not [\"/usr/local/bin/marketplace\"]",
                "command is [], not [\"serve\", \"--target\", \"all\"]"
            ]
        );
    }

    #[test]
    fn a_missing_or_extra_exposed_port_fails() {
        let mut inspect = inspect();
        let ports = inspect[0]["Config"]["ExposedPorts"]
            .as_object_mut()
            .unwrap();
        ports.remove("9090/tcp");
        ports.insert("22/tcp".to_owned(), serde_json::json!({}));
        let problems = check_metadata(marketplace(), &inspect);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("exposes [\"22/tcp\""),
            "{problems:?}"
        );
    }

    #[test]
    fn an_image_of_30_mb_or_more_fails() {
        let mut inspect = inspect();
        inspect[0]["Size"] = MAX_IMAGE_BYTES.into();
        assert_eq!(
            check_metadata(marketplace(), &inspect),
            ["is 30.0 MB, not under 30.0 MB"]
        );
    }

    #[test]
    fn the_operator_image_is_checked_against_its_own_expectations() {
        let problems = check_metadata(&IMAGES[1], &inspect());
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("entrypoint is [\"/usr/local/bin/marketplace\"]")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("exposes ")),
            "{problems:?}"
        );
    }

    /// A minimal ELF header with one program header of the given type.
    fn elf(program_header_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN (static-pie)
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        elf[64..68].copy_from_slice(&program_header_type.to_le_bytes());
        elf
    }

    #[test]
    fn an_executable_without_a_program_interpreter_is_static() {
        assert!(is_static_elf(&elf(1)));
    }

    #[test]
    fn an_executable_with_a_program_interpreter_is_not_static() {
        assert!(!is_static_elf(&elf(3)));
        let sh = read_head(Path::new("/bin/sh")).unwrap();
        assert!(!is_static_elf(&sh), "Debian's /bin/sh is dynamic");
    }

    #[test]
    fn a_script_or_a_truncated_header_is_not_static() {
        assert!(!is_static_elf(b"#!/bin/sh\n"));
        assert!(!is_static_elf(&elf(1)[..66]));
    }

    /// A layer holding `entries`: (path, directory?, mode, owner, data).
    fn layer(entries: &[(&str, bool, u32, u64, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for &(path, directory, mode, owner, data) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_entry_type(if directory {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            header.set_mode(mode);
            header.set_uid(owner);
            header.set_gid(owner);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn marketplace_entries(binary: &[u8]) -> Vec<(&'static str, bool, u32, u64, &[u8])> {
        vec![
            ("usr/", true, 0o755, 0, &[]),
            ("usr/local/", true, 0o755, 0, &[]),
            ("usr/local/bin/", true, 0o755, 0, &[]),
            ("usr/local/bin/marketplace", false, 0o755, 0, binary),
            ("data/", true, 0o755, 65532, &[]),
        ]
    }

    fn files(tar: &[u8]) -> BTreeMap<String, FileEntry> {
        tar_entries(tar).unwrap().into_iter().collect()
    }

    #[test]
    fn a_layer_with_the_static_binary_and_the_data_directory_passes() {
        let binary = elf(1);
        let files = files(&layer(&marketplace_entries(&binary)));
        assert_eq!(files["data"].uid, 65532);
        assert_eq!(files["usr/local/bin/marketplace"].kind, FileKind::File);
        assert_eq!(check_files(marketplace(), &files), Vec::<String>::new());
    }

    #[test]
    fn a_shell_or_a_dynamic_binary_in_the_image_fails() {
        let binary = elf(3);
        let mut entries = marketplace_entries(&binary);
        entries.push(("bin/", true, 0o755, 0, &[]));
        entries.push(("bin/sh", false, 0o755, 0, b"\x7fELF"));
        assert_eq!(
            check_files(marketplace(), &files(&layer(&entries))),
            [
                "/usr/local/bin/marketplace is not a static executable",
                "holds more than its binary: /bin, /bin/sh"
            ]
        );
    }

    #[test]
    fn a_data_directory_owned_by_root_fails() {
        let binary = elf(1);
        let mut entries = marketplace_entries(&binary);
        entries.pop();
        entries.push(("data/", true, 0o755, 0, &[]));
        assert_eq!(
            check_files(marketplace(), &files(&layer(&entries))),
            ["/data belongs to 0:0, not 65532:65532"]
        );
    }

    #[test]
    fn a_path_longer_than_a_ustar_header_holds_is_read_whole() {
        let long = format!("{}/marketplace", "d".repeat(120));
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, &long, &b"x"[..]).unwrap();
        let entries = tar_entries(&builder.into_inner().unwrap()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, long);
    }

    #[test]
    fn each_dockerfile_builds_from_the_toolchain_of_rust_toolchain_toml() {
        let root = crate::workspace_root();
        let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
        let channel = toolchain
            .lines()
            .find_map(|line| line.trim().strip_prefix("channel = "))
            .unwrap()
            .trim_matches('"');
        for image in &IMAGES {
            let dockerfile = std::fs::read_to_string(root.join(image.dockerfile)).unwrap();
            assert!(
                dockerfile.contains(&format!("\nARG RUST_VERSION={channel}\n")),
                "{} does not build with Rust {channel}",
                image.dockerfile
            );
        }
    }

    #[test]
    fn each_dockerfiles_prebuilt_binary_defaults_to_where_xtask_stages_it() {
        let root = crate::workspace_root();
        for image in &IMAGES {
            let dockerfile = std::fs::read_to_string(root.join(image.dockerfile)).unwrap();
            assert!(
                dockerfile.contains(&format!("\nARG BINARY={}\n", image.staged_binary())),
                "{}",
                image.dockerfile
            );
        }
    }
}
