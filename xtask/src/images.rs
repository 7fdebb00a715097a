//! `cargo xtask images`: local PostgreSQL, Redis and MariaDB images for the container path of
//! the backend tests, on a machine that has a Docker engine but no registry.
//!
//! One Debian rootfs from `debootstrap` holds all three servers and the entrypoint in
//! `xtask/images/entrypoint.sh`; `docker import` turns it into an image, tagged once per
//! server. The image carries a hash of its recipe, so a repeat run with an unchanged recipe
//! reuses it in seconds; the downloaded packages are kept in a cache directory, so a rebuild
//! does not download them again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Like `crate::run`, but the child's standard output goes to our standard error: this
/// command's standard output is the `export` lines `.ci/run` sources, and debootstrap's
/// progress lines (`I: Retrieving ...`) must not land among them.
fn run(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("could not start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed: {status}", args.join(" ")))
    }
}

const SUITE: &str = "bookworm";
const PACKAGES: &str = "postgresql,redis-server,mariadb-server";
const ENTRYPOINT: &str = include_str!("../images/entrypoint.sh");
const BASE: &str = "session-test/servers";
/// Each server's tag and the variable that points the tests at it.
const TAGS: [(&str, &str); 3] = [
    ("session-test/postgres", "SESSION_TEST_POSTGRES_IMAGE"),
    ("session-test/redis", "SESSION_TEST_REDIS_IMAGE"),
    ("session-test/mariadb", "SESSION_TEST_MYSQL_IMAGE"),
];
const RECIPE_VAR: &str = "SESSION_TEST_IMAGE_RECIPE";

pub(crate) fn images() -> Result<(), String> {
    let recipe = recipe();
    let base = format!("{BASE}:{SUITE}");
    if image_recipe(&base).as_deref() == Some(recipe.as_str()) {
        eprintln!("{base} is up to date (recipe {recipe}); reusing it");
    } else {
        build(&base, &recipe)?;
    }
    for (name, _) in TAGS {
        run("docker", &["tag", &base, &format!("{name}:{SUITE}")], &[])?;
    }
    println!("# The container tests use these images when these are set:");
    for (name, var) in TAGS {
        println!("export {var}={name}:{SUITE}");
    }
    Ok(())
}

/// What the image is made of; a change to any part rebuilds it.
fn recipe() -> String {
    let mut hasher = DefaultHasher::new();
    (SUITE, PACKAGES, ENTRYPOINT, mirror()).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// `SESSION_TEST_DEBIAN_MIRROR`, else debootstrap's own default.
fn mirror() -> Option<String> {
    std::env::var("SESSION_TEST_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.trim().is_empty())
}

/// The recipe hash an existing image was built from, if the image exists.
fn image_recipe(image: &str) -> Option<String> {
    let output = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            image,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{RECIPE_VAR}="))
                .map(str::to_owned)
        })
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("session-test-images")
}

fn build(image: &str, recipe: &str) -> Result<(), String> {
    for tool in ["debootstrap", "docker"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
        {
            return Err(format!(
                "{tool} is not installed (Debian: apt-get install debootstrap docker.io)"
            ));
        }
    }
    let cache = cache_dir();
    let debs = cache.join("debs");
    let rootfs = cache.join(format!("rootfs-{recipe}"));
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    }
    let result = build_in(image, recipe, &debs, &rootfs);
    // The rootfs is only the image's source; the packages stay cached in `debs`.
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

fn build_in(
    image: &str,
    recipe: &str,
    debs: &std::path::Path,
    rootfs: &std::path::Path,
) -> Result<(), String> {
    let cache_arg = format!("--cache-dir={}", debs.display());
    let include = format!("--include={PACKAGES}");
    let rootfs_arg = rootfs.display().to_string();
    let mut args = vec![
        "--variant=minbase",
        include.as_str(),
        cache_arg.as_str(),
        SUITE,
        rootfs_arg.as_str(),
    ];
    let mirror = mirror();
    if let Some(mirror) = &mirror {
        args.push(mirror);
    }
    run("debootstrap", &args, &[])?;

    let entrypoint = rootfs.join("usr/local/bin/session-test-entrypoint");
    std::fs::write(&entrypoint, ENTRYPOINT)
        .map_err(|e| format!("{}: {e}", entrypoint.display()))?;
    run("chmod", &["0755", &entrypoint.display().to_string()], &[])?;
    // The server packages' own clusters and data are not used: each container makes fresh
    // ones. Leaving them out keeps the image smaller.
    for dir in [
        "var/lib/postgresql",
        "var/lib/mysql",
        "var/cache/apt/archives",
    ] {
        let path = rootfs.join(dir);
        if path.exists() {
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::create_dir_all(&path);
        }
    }

    eprintln!(
        "$ tar -C {} -c . | docker import ... - {image}",
        rootfs.display()
    );
    let mut tar = Command::new("tar")
        .args(["-C", &rootfs.display().to_string(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start tar: {e}"))?;
    let tar_out = tar.stdout.take().ok_or("tar has no stdout")?;
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            r#"ENTRYPOINT ["/usr/local/bin/session-test-entrypoint"]"#,
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            &format!("ENV {RECIPE_VAR}={recipe}"),
            "-",
            image,
        ])
        .stdin(tar_out)
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("could not start docker import: {e}"))?;
    let tar_status = tar.wait().map_err(|e| format!("tar: {e}"))?;
    if !tar_status.success() || !import.success() {
        return Err(format!(
            "importing the rootfs failed (tar: {tar_status}, docker import: {import})"
        ));
    }
    let _ = std::io::stderr().flush();
    Ok(())
}
