//! [`ShortList`]: a list of small `Copy` values a task keeps while it runs (the slots it
//! borrowed, the memory it releases), inline up to `N`, then in a `Vec`.
//!
//! A `SmallVec` would do, but it asks "spilled?" on every push and iteration and drops
//! out of line, and the executor makes two of these per node (BENCHMARKS.md, "Per-op
//! cost of the local chain").

/// Up to `N` values inline, the rest in a `Vec` (unallocated until then).
pub(crate) struct ShortList<T: Copy + Default, const N: usize> {
    len: usize,
    inline: [T; N],
    spill: Vec<T>,
}

impl<T: Copy + Default, const N: usize> ShortList<T, N> {
    /// An empty list.
    #[inline]
    pub(crate) fn new() -> Self {
        ShortList {
            len: 0,
            inline: [T::default(); N],
            spill: Vec::new(),
        }
    }

    /// Appends a value.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = value,
            None => self.spill.push(value),
        }
        self.len += 1;
    }

    /// Whether the list holds no value.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values, in order.
    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.inline[..self.len.min(N)]
            .iter()
            .chain(&self.spill)
            .copied()
    }

    /// Empties the list.
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::ShortList;

    #[test]
    fn values_come_back_in_order_inline_and_spilled() {
        let mut l = ShortList::<u32, 2>::new();
        assert_eq!(l.iter().count(), 0);
        assert!(l.is_empty());
        l.push(7);
        assert!(!l.is_empty());
        assert_eq!(l.iter().collect::<Vec<_>>(), [7]);
        for v in 8..12 {
            l.push(v);
        }
        assert_eq!(l.iter().collect::<Vec<_>>(), [7, 8, 9, 10, 11]);
        l.clear();
        assert_eq!(l.iter().count(), 0);
        l.push(1);
        assert_eq!(l.iter().collect::<Vec<_>>(), [1]);
    }
}
