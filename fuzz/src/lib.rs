//! What every fuzz target shares: an allocator that aborts on an allocation larger than
//! the target's limit, so that a length a peer controls which reaches an allocation
//! unchecked is a crash the fuzzer saves, not just a slow input.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, refusing (by aborting) any single allocation over its limit.
pub struct Limited(pub usize);

impl Limited {
    fn check(&self, size: usize) {
        // A panic's report (its backtrace's symbols) is not the target's allocation.
        if size > self.0 && !std::thread::panicking() {
            // No allocation here: the message is static, written straight to stderr.
            let message = b"segnode-fuzz: an allocation exceeded the target's limit\n";
            // SAFETY: writing a static buffer to the standard error descriptor.
            unsafe { libc_write(2, message.as_ptr(), message.len()) };
            std::process::abort();
        }
    }
}

unsafe extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

// SAFETY: every call is passed to the system allocator unchanged once its size is checked.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A fuzz target of `segnode::fuzzing::$entry` whose allocations are limited to
/// `segnode::fuzzing::allocation_limit::$limit` bytes each.
#[macro_export]
macro_rules! target {
    ($entry:ident, $limit:ident) => {
        #[global_allocator]
        static ALLOCATOR: $crate::Limited =
            $crate::Limited(segnode::fuzzing::allocation_limit::$limit);

        libfuzzer_sys::fuzz_target!(|data: &[u8]| segnode::fuzzing::$entry(data));
    };
}
