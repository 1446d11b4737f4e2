//! A podman engine for the container tests and the benchmark: Debian's `podman` (4.3)
//! serving the Docker-compatible API with `podman system service`, containers run with `runc`
//! (`crun` refuses the development machines' hybrid cgroups) from an image imported from
//! Debian's `busybox-static`, with `--network none` (no bridge or firewall rules on the host).
//! Shared by `tests/containers.rs` (through `#[path]`) and `edgemon-bench`; std only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The image: Debian's static busybox alone, imported with no registry.
pub const IMAGE: &str = "localhost/edgemon-busybox:test";

/// A podman engine of its own: storage, socket and containers in a temp directory.
pub struct Podman {
    dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    service: Option<Child>,
}

impl Podman {
    /// Starts `podman system service` on a socket in a fresh directory, with the image
    /// imported; `Err` says why no engine can run here.
    pub fn start(tag: &str) -> Result<Podman, String> {
        // Root only: podman as another user needs a login session's runtime directory.
        if !is_root() {
            return Err("not root".into());
        }
        for tool in ["podman", "runc"] {
            if Command::new(tool).arg("--version").output().is_err() {
                return Err(format!("{tool} is not installed"));
            }
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err("/bin/busybox (busybox-static) is not installed".into());
        }
        let dir = std::env::temp_dir().join(format!("edgemon-podman-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("image/bin")).unwrap();
        std::fs::copy(busybox, dir.join("image/bin/busybox")).unwrap();
        let mut p = Podman {
            socket: dir.join("api.sock"),
            dir,
            service: None,
        };
        let tar = p.dir.join("image.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(p.dir.join("image"))
            .arg("-cf")
            .arg(&tar)
            .arg("bin")
            .status()
            .unwrap();
        assert!(ok.success());
        let out = p.podman(&["import", tar.to_str().unwrap(), IMAGE]);
        if !out.status.success() {
            return Err(format!(
                "podman import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        p.start_service();
        Ok(p)
    }

    /// `podman` with this engine's storage, runtime and events file.
    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--events-backend",
                "file",
            ]);
        cmd
    }

    /// Runs `podman ARGS` against this engine.
    pub fn podman(&self, args: &[&str]) -> std::process::Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman runs")
    }

    pub fn must(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `script` in a detached container `name` (with a TTY if `tty`).
    pub fn run(&self, name: &str, tty: bool, script: &str) {
        let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
        args.extend([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        if tty {
            args.push("-t");
        }
        args.extend([IMAGE, "/bin/busybox", "sh", "-c", script]);
        self.must(&args);
    }

    pub fn start_service(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let child = self
            .command()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", self.socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        self.service = Some(child);
        // The socket appears once the service listens (bounded wait on a file, no event exists).
        for _ in 0..200 {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "podman system service did not listen on {}",
            self.socket.display()
        );
    }

    pub fn stop_service(&mut self) {
        if let Some(mut c) = self.service.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-a", "-t", "0"]);
        self.stop_service();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // Shared with the tests, which have no libc binding of their own: ask `id`.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
