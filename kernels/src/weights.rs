//! A layer's packed weights as its kernel holds them: f32 panels
//! ([`crate::panels::pack`]) or int8 pair panels ([`crate::int8::PairPanels`]).

use std::sync::Arc;

use crate::int8::PairPanels;

/// A layer's weights as its kernel reads them: f32 panels, or int8 pair
/// panels stored as `T` (i16 where a tile broadcasts pairs, i8 where it
/// streams them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PackedWeights<T> {
    /// [`pack`](crate::panels::pack)ed with `group` 1.
    F32(Arc<Vec<f32>>),
    Int8(Arc<PairPanels<T>>),
}

impl<T> PackedWeights<T> {
    pub(crate) fn is_int8(&self) -> bool {
        matches!(self, PackedWeights::Int8(_))
    }
}
