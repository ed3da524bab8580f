//! What every fuzz target shares: the entry point in `segnode::fuzzing`, and its
//! allocation limit enforced by `segnode::fuzzing::Limited`.

/// A fuzz target of `segnode::fuzzing::$entry` whose allocations are limited to
/// `segnode::fuzzing::allocation_limit::$limit` bytes each.
#[macro_export]
macro_rules! target {
    ($entry:ident, $limit:ident) => {
        #[global_allocator]
        static ALLOCATOR: segnode::fuzzing::Limited =
            segnode::fuzzing::Limited(segnode::fuzzing::allocation_limit::$limit);

        libfuzzer_sys::fuzz_target!(|data: &[u8]| segnode::fuzzing::$entry(data));
    };
}
