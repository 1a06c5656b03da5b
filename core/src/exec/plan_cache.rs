//! [`PlanCache`]: a session's plans by signature (fed outputs, fetches, targets), looked
//! up without allocating: a step whose signature ran before hashes its slices in place and
//! compares them with the stored keys; only a new signature builds a key.
//!
//! Promises: a lookup returns the plan inserted for an equal signature (slices equal
//! element by element, in order), or `None`; at most `capacity` plans are kept (the
//! cache is cleared when full, as the session's plan cache always was).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::graph::{NodeId, Output};
use crate::tensor::Tensor;

/// The signature a plan was built for.
type Key = (Box<[Output]>, Box<[Output]>, Box<[NodeId]>);

/// The plans whose signatures share a hash (rarely more than one).
type Bucket<P> = SmallVec<[(Key, Arc<P>); 1]>;

/// Plans of type `P` by signature.
#[derive(Debug)]
pub(crate) struct PlanCache<P> {
    /// Plans by the hash of their signature; a bucket rarely holds more than one.
    buckets: HashMap<u64, Bucket<P>>,
    hasher: RandomState,
    len: usize,
    capacity: usize,
}

impl<P> PlanCache<P> {
    /// An empty cache that keeps at most `capacity` plans.
    pub(crate) fn new(capacity: usize) -> PlanCache<P> {
        PlanCache {
            buckets: HashMap::new(),
            hasher: RandomState::new(),
            len: 0,
            capacity,
        }
    }

    /// Plans cached now.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drops every plan.
    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
        self.len = 0;
    }

    fn hash(&self, feeds: &[(Output, Tensor)], fetches: &[Output], targets: &[NodeId]) -> u64 {
        let mut h = self.hasher.build_hasher();
        feeds.len().hash(&mut h);
        for (o, _) in feeds {
            o.hash(&mut h);
        }
        fetches.hash(&mut h);
        targets.hash(&mut h);
        h.finish()
    }

    /// The plan of this signature, if one was inserted.
    pub(crate) fn get(
        &self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
    ) -> Option<Arc<P>> {
        let bucket = self.buckets.get(&self.hash(feeds, fetches, targets))?;
        bucket
            .iter()
            .find(|((f, x, t), _)| {
                f.len() == feeds.len()
                    && f.iter().zip(feeds).all(|(a, (b, _))| a == b)
                    && **x == *fetches
                    && **t == *targets
            })
            .map(|(_, p)| Arc::clone(p))
    }

    /// Caches `plan` for this signature (clearing the cache first when it is full).
    pub(crate) fn insert(
        &mut self,
        feeds: &[(Output, Tensor)],
        fetches: &[Output],
        targets: &[NodeId],
        plan: Arc<P>,
    ) {
        if self.get(feeds, fetches, targets).is_some() {
            return; // built twice by racing steps: keep the first
        }
        if self.len >= self.capacity {
            self.clear();
        }
        let key = (
            feeds.iter().map(|(o, _)| *o).collect(),
            fetches.into(),
            targets.into(),
        );
        let hash = self.hash(feeds, fetches, targets);
        self.buckets.entry(hash).or_default().push((key, plan));
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::PlanCache;
    use crate::graph::Graph;
    use crate::tensor::Tensor;

    #[test]
    fn equal_signatures_share_a_plan_and_others_do_not() {
        let g = Graph::new();
        let a = g.constant(1.0f32).unwrap();
        let b = g.constant(2.0f32).unwrap();
        let mut cache = PlanCache::new(3);
        let feed = |o| [(o, Tensor::scalar(0.0f32))];
        cache.insert(&feed(a), &[b], &[], Arc::new(1));
        cache.insert(&[], &[a, b], &[b.node], Arc::new(2));
        // The fed tensor is not part of the signature.
        assert_eq!(
            cache.get(&[(a, Tensor::scalar(5.0f32))], &[b], &[]),
            Some(Arc::new(1))
        );
        assert_eq!(cache.get(&[], &[a, b], &[b.node]), Some(Arc::new(2)));
        // Order, roles and lengths matter.
        assert_eq!(cache.get(&[], &[b, a], &[b.node]), None);
        assert_eq!(cache.get(&feed(b), &[b], &[]), None);
        assert_eq!(cache.get(&[], &[a, b], &[]), None);
        assert_eq!(cache.get(&[], &[b], &[]), None);
        // A second insert of a signature keeps the first plan.
        cache.insert(&feed(a), &[b], &[], Arc::new(3));
        assert_eq!(cache.get(&feed(a), &[b], &[]), Some(Arc::new(1)));
        assert_eq!(cache.len(), 2);
        // Full: cleared, then the new plan goes in.
        cache.insert(&[], &[a], &[], Arc::new(4));
        cache.insert(&[], &[b], &[], Arc::new(5));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&[], &[b], &[]), Some(Arc::new(5)));
        assert_eq!(cache.get(&[], &[a], &[]), None);
    }
}
