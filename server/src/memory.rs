//! The process's allocator setting, made before any thread starts.
//!
//! glibc gives every thread that allocates under contention an arena of its own (up to eight
//! per core), and free space stays in the arena it was freed to. An idle WebSocket's few
//! kilobytes are allocated by whichever worker ran its handshake, so with several workers the
//! free space the handshakes leave is spread over several arenas, and the next connection's
//! worker does not reuse the others': 5.43-5.66 KiB of resident memory per idle connection
//! with glibc's default, 4.85-4.98 with one arena (`bench/scripts/density_real.py`,
//! docs/benchmarks.md, issue 19, seventh pass). Small allocations come from each thread's own
//! cache without the arena's lock, and CPU per message was the same (same section).
//!
//! glibc reads `MALLOC_ARENA_MAX` when the process starts, and setting it from inside would
//! take `mallopt`, an `unsafe` call this workspace does not make. So the process starts itself
//! again, the same executable with the same arguments and the variable set. An operator's own
//! `MALLOC_ARENA_MAX` (or `GLIBC_TUNABLES` naming `glibc.malloc.arena_max`) is kept, and then
//! nothing is started again (docs/operations.md, Memory per connection).

/// Unless the environment already says how many malloc arenas, replaces this process with the
/// same program under `MALLOC_ARENA_MAX=1` (same PID, arguments and open files). Call it first
/// thing in `main`, before any thread starts. Returns only where nothing was replaced: another
/// platform or libc, the operator's own setting, or a failed `exec` (said on stderr).
pub fn one_malloc_arena() {
    if operator_chose(std::env::var_os("MALLOC_ARENA_MAX"), std::env::var_os("GLIBC_TUNABLES")) {
        return;
    }
    start_again();
}

/// Whether the environment already sets the arena count.
fn operator_chose(arena_max: Option<std::ffi::OsString>, tunables: Option<std::ffi::OsString>) -> bool {
    arena_max.is_some() || tunables.is_some_and(|t| t.to_string_lossy().contains("glibc.malloc.arena_max"))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn start_again() {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    // `/proc/self/exe`, not the path: the same file even if it was replaced on disk since.
    let err = std::process::Command::new("/proc/self/exe").arg0(arg0).args(args).env("MALLOC_ARENA_MAX", "1").exec();
    eprintln!("(could not start again with one malloc arena: {err}; glibc's default arenas are used)");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn start_again() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_setting_is_kept() {
        assert!(!operator_chose(None, None));
        assert!(operator_chose(Some("4".into()), None));
        assert!(operator_chose(Some("".into()), None));
        assert!(operator_chose(None, Some("glibc.malloc.arena_max=2".into())));
        assert!(!operator_chose(None, Some("glibc.malloc.tcache_count=0".into())));
    }
}
