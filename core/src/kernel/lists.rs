//! The input and output lists of a [`KernelContext`](super::KernelContext): the first
//! two inputs and the first output live inline, the rest in a `Vec` that stays
//! unallocated for the ops that have no more (nearly all).
//!
//! They sit on the executor's per-node path, where a `SmallVec` would ask "spilled?" on
//! every push, index, clear and drop, and drop out of line: here the inline part is a
//! plain array (or `Option`) whose index is checked against the length, and dropping an
//! empty `Vec` is one compare (BENCHMARKS.md, "Per-op cost of the local chain").

use super::Input;
use crate::tensor::Tensor;

/// An input the executor lends a kernel's call ([`InputList::push_lent`]).
pub(crate) enum Lent<'a> {
    /// [`Input::Slot`].
    Slot(&'a mut Option<Tensor>),
    /// [`Input::Borrowed`].
    Borrowed(&'a Tensor),
}

/// Inputs of a kernel's call: `len` of them, the first two in `first`.
pub(crate) struct InputList<'a> {
    len: usize,
    /// Inputs 0 and 1; [`Input::Taken`] past `len`.
    first: [Input<'a>; 2],
    /// Inputs 2 and on.
    rest: Vec<Input<'a>>,
}

impl<'a> InputList<'a> {
    /// No inputs.
    #[inline]
    pub(crate) fn new() -> Self {
        InputList {
            len: 0,
            first: [Input::Taken, Input::Taken],
            rest: Vec::new(),
        }
    }

    /// The number of inputs.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends an input the executor lends: built in its place here from the two words
    /// of `lent`, rather than built whole (the size of a tensor) on the caller's stack
    /// and copied in.
    #[inline(always)]
    pub(crate) fn push_lent(&mut self, lent: Lent<'a>) {
        let input = |lent| match lent {
            Lent::Slot(place) => Input::Slot(place),
            Lent::Borrowed(t) => Input::Borrowed(t),
        };
        match self.first.get_mut(self.len) {
            // As in `push`.
            Some(slot) => std::mem::forget(std::mem::replace(slot, input(lent))),
            None => self.rest.push(input(lent)),
        }
        self.len += 1;
    }

    /// Appends an input.
    #[inline(always)]
    pub(crate) fn push(&mut self, input: Input<'a>) {
        match self.first.get_mut(self.len) {
            // Past `len` an inline place is `Taken`: forgetting it drops nothing, and
            // spares the executor's per-node path the drop glue's check.
            Some(slot) => std::mem::forget(std::mem::replace(slot, input)),
            None => self.rest.push(input),
        }
        self.len += 1;
    }

    /// Input `i`.
    ///
    /// # Panics
    /// If `i` is not below [`len`](Self::len).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> &Input<'a> {
        if i >= self.len {
            out_of_range(i, self.len);
        }
        match self.first.get(i) {
            Some(input) => input,
            None => &self.rest[i - 2],
        }
    }

    /// Input `i`, mutably.
    ///
    /// # Panics
    /// If `i` is not below [`len`](Self::len).
    #[inline]
    pub(crate) fn get_mut(&mut self, i: usize) -> &mut Input<'a> {
        if i >= self.len {
            out_of_range(i, self.len);
        }
        match self.first.get_mut(i) {
            Some(input) => input,
            None => &mut self.rest[i - 2],
        }
    }

    /// Whether the list holds no input and no allocation (nothing to drop).
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.len == 0 && self.rest.capacity() == 0
    }

    /// Drops every input (ending the borrows of lent ones).
    #[inline(always)]
    pub(crate) fn clear(&mut self) {
        // Only an owned tensor, or one in a slot's place, has anything to drop: matched
        // here, inline, rather than through the array's drop glue, out of line.
        for input in &mut self.first {
            empty(std::mem::replace(input, Input::Taken));
        }
        if !self.rest.is_empty() {
            self.rest.drain(..).for_each(empty);
        }
        self.len = 0;
    }
}

impl<'a> FromIterator<Input<'a>> for InputList<'a> {
    fn from_iter<I: IntoIterator<Item = Input<'a>>>(iter: I) -> Self {
        let mut list = InputList::new();
        for input in iter {
            list.push(input);
        }
        list
    }
}

/// Drops an input: an owned tensor, or the tensor in a slot's place (emptying it).
#[inline(always)]
fn empty(input: Input<'_>) {
    match input {
        Input::Owned(t) => drop(t),
        Input::Slot(place) => drop(place.take()),
        Input::Borrowed(_) | Input::Taken => {}
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_range(i: usize, len: usize) -> ! {
    panic!("kernel input {i} asked of a context with {len} inputs")
}

/// Outputs of a kernel's call, in order: output 0 in `first`, the others in `rest`.
#[derive(Default)]
pub(crate) struct OutputList {
    /// Output 0; `None` only while no output was pushed (then `rest` is empty).
    first: Option<Tensor>,
    /// Outputs 1 and on.
    rest: Vec<Tensor>,
}

impl OutputList {
    /// No outputs.
    #[inline]
    pub(crate) fn new() -> Self {
        OutputList {
            first: None,
            rest: Vec::new(),
        }
    }

    /// Appends an output.
    #[inline(always)]
    pub(crate) fn push(&mut self, t: Tensor) {
        // Asked first, so that the tensor is written once, in its place (the assignment's
        // drop of the old value is known to be of `None`: nothing).
        if self.first.is_none() {
            // Forgetting the `None` replaced spares a call to the drop glue.
            std::mem::forget(self.first.replace(t));
        } else {
            self.rest.push(t);
        }
    }

    /// The number of outputs.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Whether the list holds no output and no allocation (nothing to drop).
    #[inline]
    pub(crate) fn is_spent(&self) -> bool {
        self.first.is_none() && self.rest.capacity() == 0
    }

    /// The only output, when there is exactly one.
    #[inline]
    pub(crate) fn single(&self) -> Option<&Tensor> {
        match (&self.first, self.rest.is_empty()) {
            (Some(t), true) => Some(t),
            _ => None,
        }
    }

    /// The outputs, in order, by reference.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tensor> {
        self.first.iter().chain(&self.rest)
    }

    /// Output 0 in its place (for the executor to move it straight into its slot) and
    /// the others, to be drained in order: the executor's last use of the list (an
    /// output pushed before both are emptied would come out of order).
    #[inline]
    pub(crate) fn parts(&mut self) -> (&mut Option<Tensor>, &mut Vec<Tensor>) {
        (&mut self.first, &mut self.rest)
    }
}

impl FromIterator<Tensor> for OutputList {
    fn from_iter<I: IntoIterator<Item = Tensor>>(iter: I) -> Self {
        let mut list = OutputList::new();
        for t in iter {
            list.push(t);
        }
        list
    }
}

impl IntoIterator for OutputList {
    type Item = Tensor;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Tensor>, std::vec::IntoIter<Tensor>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::{Input, InputList, OutputList};
    use crate::tensor::Tensor;

    fn value(input: &Input<'_>) -> i32 {
        match input {
            Input::Owned(t) => t.to_vec::<i32>().unwrap()[0],
            Input::Slot(place) => place.as_ref().unwrap().to_vec::<i32>().unwrap()[0],
            Input::Borrowed(t) => t.to_vec::<i32>().unwrap()[0],
            Input::Taken => -1,
        }
    }

    #[test]
    fn inputs_keep_their_order_inline_and_spilled_and_clear_to_none() {
        let lent = Tensor::scalar(1i32);
        let mut list = InputList::new();
        list.push(Input::Owned(Tensor::scalar(0i32)));
        list.push(Input::Borrowed(&lent));
        for v in 2..5 {
            list.push(Input::Owned(Tensor::scalar(v)));
        }
        assert_eq!(list.len(), 5);
        assert_eq!(
            (0..5).map(|i| value(list.get(i))).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        *list.get_mut(3) = Input::Taken;
        assert_eq!(value(list.get(3)), -1);
        list.clear();
        assert_eq!(list.len(), 0);
        list.push(Input::Owned(Tensor::scalar(9i32)));
        assert_eq!((list.len(), value(list.get(0))), (1, 9));
    }

    #[test]
    #[should_panic(expected = "kernel input 1 asked of a context with 1 inputs")]
    fn an_input_past_the_length_panics_even_inline() {
        let list: InputList<'_> = [Input::Owned(Tensor::scalar(0i32))].into_iter().collect();
        let _ = list.get(1);
    }

    #[test]
    fn outputs_keep_their_order_and_drain_first_then_rest() {
        let mut list = OutputList::new();
        assert_eq!(list.len(), 0);
        assert!(list.single().is_none());
        list.push(Tensor::scalar(0i32));
        assert!(list.single().is_some());
        let mut list = OutputList::new();
        for v in 0..3 {
            list.push(Tensor::scalar(v));
        }
        assert_eq!(list.len(), 3);
        let seen: Vec<i32> = list.iter().map(|t| t.to_vec::<i32>().unwrap()[0]).collect();
        assert_eq!(seen, [0, 1, 2]);
        let (first, rest) = list.parts();
        assert_eq!(first.take().unwrap().to_vec::<i32>().unwrap(), [0]);
        assert_eq!(rest.drain(..).count(), 2);
        assert_eq!(list.len(), 0);
        let again: OutputList = [Tensor::scalar(5i32)].into_iter().collect();
        assert_eq!(again.into_iter().count(), 1);
    }
}
