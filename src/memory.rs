//! Large buffers: the volume and the label map of a thin-slice series are hundreds of
//! MiB, and first writes to fresh pages can cost more than the writes themselves.

/// `n` default (zero) values in pages that are not touched yet, so that whoever fills
/// them first (in parallel) takes the page faults, and advised to be backed by
/// transparent huge pages: 1,200 slices of 512 x 512 labels are 77,000 faults with
/// 4 KiB pages and 150 with 2 MiB ones. `T::default()` must be all zero bytes (numbers,
/// `bool`) for the allocation to be the calloc'd pages it is meant to be.
pub fn zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut buffer = vec![T::default(); n];
    let start = buffer.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(&buffer[..]);
    let first_page = start & !4095;
    // SAFETY: madvise reads and writes no memory; it advises the kernel about the pages
    // of this live allocation (extended down to its first page boundary, as madvise
    // requires). Where the advice is not honoured (another kernel, THP off) it fails or
    // does nothing, and the buffer is the same.
    unsafe {
        libc::madvise(
            first_page as *mut libc::c_void,
            end - first_page,
            libc::MADV_HUGEPAGE,
        );
    }
    buffer
}
