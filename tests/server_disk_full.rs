//! A full disk, for real: `shiplogd` runs on a small tmpfs with a filler file beside it.
//! Writes go on until the file system has no room for the next segment; from then on each
//! write is refused with an error that says why, reads and the rest of the server keep
//! working, and nothing acknowledged is lost. Once the filler is removed, writes are taken
//! again without a restart, and a `kill -9` and restart on the same file system still holds
//! every acknowledged write.
//!
//! Mounting needs `CAP_SYS_ADMIN` (root in CI, where `.ci/run` runs); without it the test says
//! so and checks nothing else.

#![allow(
    clippy::unwrap_used,
    clippy::pedantic,
    reason = "test code: a failed unwrap is a failed test"
)]

mod daemon;

use std::path::{Path, PathBuf};
use std::process::Command;

use daemon::{Daemon, wait_until};
use redis::Commands;

/// A tmpfs of `size_mib` MiB mounted at a path, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mib: u64) -> Result<Self, String> {
        std::fs::create_dir_all(at).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount could not run: {e}"))?;
        if output.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn value(i: usize) -> String {
    format!("{i:08}-{}", "v".repeat(1000))
}

#[test]
fn a_full_disk_refuses_writes_cleanly_and_the_node_takes_them_again_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match Tmpfs::mount(&dir.path().join("small"), 24) {
        Ok(mount) => mount,
        Err(e) => {
            eprintln!("not run: a tmpfs cannot be mounted here ({e}); run as root");
            return;
        }
    };
    let filler = mount.0.join("filler");
    std::fs::write(&filler, vec![7u8; 8 << 20]).unwrap();
    let data = mount.0.join("data");
    let args = ["--segment-bytes", "1048576"];
    let daemon = Daemon::start(&data, &args);
    let mut con = daemon.client();

    // Fill it: each segment is preallocated, so the first refusal comes when the next one
    // cannot be.
    let mut acknowledged = 0;
    let mut refusal = None;
    for i in 0..40_000 {
        match con.set::<_, _, ()>(format!("key:{i}"), value(i)) {
            Ok(()) => acknowledged = i + 1,
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("24 MiB filled without a refusal");
    eprintln!("{acknowledged} writes taken, then: {refusal}");
    assert!(acknowledged > 1000, "only {acknowledged} writes fit");
    assert!(
        refusal.to_lowercase().contains("space"),
        "the refusal does not say the disk is full: {refusal}"
    );

    // Full: writes are refused again (not a crash), reads and the rest work.
    for i in 0..3 {
        let again = con.set::<_, _, ()>(format!("more:{i}"), value(i));
        assert!(again.is_err(), "a write was taken on a full disk");
    }
    let _: String = redis::cmd("PING").query(&mut con).unwrap();
    let got: Option<String> = con.get(format!("key:{}", acknowledged - 1)).unwrap();
    assert_eq!(got, Some(value(acknowledged - 1)));
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(!info.is_empty());

    // Space returns: writes are taken again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(30, || con
            .set::<_, _, ()>("after", "space returned")
            .is_ok()),
        "writes are still refused after space returned:\n{}",
        daemon.log()
    );
    for i in acknowledged..acknowledged + 500 {
        let () = con.set(format!("key:{i}"), value(i)).unwrap();
    }
    let acknowledged = acknowledged + 500;
    drop(con);

    // Nothing acknowledged was lost, across a kill -9 too.
    daemon.kill();
    let daemon = Daemon::start(&data, &args);
    let mut con = daemon.client();
    for chunk in (0..acknowledged).collect::<Vec<_>>().chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("key:{i}")).collect();
        let values: Vec<Option<String>> = con.mget(&keys).unwrap();
        for (i, got) in chunk.iter().zip(values) {
            assert_eq!(got, Some(value(*i)), "acknowledged key:{i} lost");
        }
    }
    let after: Option<String> = con.get("after").unwrap();
    assert_eq!(after.as_deref(), Some("space returned"));
    drop(con);
    daemon.stop();
}
