//! Process-wide allocator settings.

/// Makes every allocation of 1 MiB or more its own mapping, returned to the system when freed.
///
/// A logical backup or restore allocates and frees many multi-MiB buffers (S3 parts, zstd
/// frames, object bodies) on several threads. glibc's default raises its mapping threshold after
/// the first such buffer is freed and then serves the next ones from per-thread heaps, where they
/// fragment: the resident size then grows with the number of parts, so with the size of the
/// database. A fixed threshold keeps the peak at what the buffers in flight need.
pub fn bound_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the function
    // starts its work and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
