//! memcached's size-class ladder, kept for what operators and tools read from it.
//!
//! memcrab does not cut memory into per-class slabs (see ARCHITECTURE.md, "The engine's
//! memory layout"): items are packed into fixed-size segments that any size can use, so
//! memory never calcifies in one class and no item pays chunk rounding. `stats items`,
//! `stats slabs` and the per-class counters still report items per class exactly as
//! memcached would group them, built from `-n`, `-f` and `slab_chunk_max` the same way.

/// memcached's page size, used to present per-class numbers in its terms.
pub const PAGE_SIZE: usize = 1 << 20;
/// memcached numbers classes 1..=63.
pub const MAX_CLASSES: usize = 63;

/// memcached's size-class ladder: the first class holds a header plus `-n` bytes, each next
/// one is `-f` times larger (8-byte aligned), the last is `slab_chunk_max`.
#[derive(Debug, Clone)]
pub struct SizeClasses {
    sizes: Vec<u32>,
}

impl SizeClasses {
    pub fn new(header: usize, min_chunk: usize, factor: f64, chunk_max: usize) -> Self {
        let align = |n: f64| ((n as usize) + 7) & !7;
        let mut sizes = Vec::new();
        let mut size = align((header + min_chunk) as f64);
        while sizes.len() < MAX_CLASSES - 1 && (size as f64) <= chunk_max as f64 / factor {
            sizes.push(size as u32);
            size = align(size as f64 * factor);
        }
        sizes.push(chunk_max as u32);
        Self { sizes }
    }

    /// Number of classes; ids run from 1 to `len()`.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Chunk size of class `id` (1-based).
    pub fn chunk_size(&self, id: usize) -> usize {
        self.sizes[id - 1] as usize
    }

    /// How `items` of class `id` would lie in memcached's 1 MiB pages: (chunks per page,
    /// pages). `stats slabs` and the per-class metrics report these.
    pub fn pages(&self, id: usize, items: u64) -> (u64, u64) {
        let per_page = (PAGE_SIZE / self.chunk_size(id)).max(1) as u64;
        (per_page, items.div_ceil(per_page).max(1))
    }

    /// The class an item of `total` bytes belongs to; items above the largest chunk are
    /// counted in the last class, as memcached chains them from its largest chunks.
    pub fn class_of(&self, total: usize) -> usize {
        let i = self.sizes.partition_point(|&s| (s as usize) < total);
        i.min(self.sizes.len() - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_matches_memcacheds_shape() {
        // memcached's own header (48 bytes) with -n 48 -f 1.25 starts at 96, as 1.6 shows.
        let c = SizeClasses::new(48, 48, 1.25, 512 * 1024);
        assert_eq!(c.chunk_size(1), 96);
        assert_eq!(c.chunk_size(2), 120);
        assert_eq!(c.chunk_size(7), 384);
        assert_eq!(c.chunk_size(c.len()), 512 * 1024);
        assert!(c.len() <= MAX_CLASSES);
        assert_eq!(c.class_of(1), 1);
        assert_eq!(c.class_of(96), 1);
        assert_eq!(c.class_of(97), 2);
        assert_eq!(c.class_of(10 << 20), c.len());
    }
}
