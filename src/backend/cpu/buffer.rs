//! Weight (and KV cache) storage for the CPU kernels: zeroed anonymous memory, 2 MiB aligned and (on Linux)
//! advised for transparent huge pages, so streaming a matrix per token walks few TLB entries
//! and the hardware prefetchers are not stopped at every 4 KiB page.
//!
//! Owns: one mapping per buffer. Must not: hold anything but plain numbers.

use std::marker::PhantomData;

use memmap2::{MmapMut, MmapOptions};

const HUGE: usize = 2 << 20;

/// Element types that are valid when all bytes are zero.
pub trait Plain: Copy + Send + Sync + 'static {}
impl Plain for f32 {}
impl Plain for u16 {}
impl Plain for u8 {}

pub struct WeightBuf<T: Plain> {
    map: MmapMut,
    offset: usize, // bytes from the map's start to the first 2 MiB boundary
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> WeightBuf<T> {
    /// `len` zeroed elements, faulted in on first touch.
    pub fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        let extra = if bytes >= HUGE { HUGE } else { 0 };
        let map = MmapOptions::new().len((bytes + extra).max(1)).map_anon()?;
        let offset = match extra {
            0 => 0,
            _ => (HUGE - map.as_ptr() as usize % HUGE) % HUGE,
        };
        // Huge pages for the whole 2 MiB pages of the data only: a partial last page advised
        // too would be backed by a full 2 MiB page (up to 2 MiB wasted per matrix).
        // Advisory only: without THP the buffer still works, with 4 KiB pages.
        #[cfg(target_os = "linux")]
        if bytes >= HUGE {
            let _ = map.advise_range(memmap2::Advice::HugePage, offset, bytes / HUGE * HUGE);
        }
        Ok(WeightBuf {
            map,
            offset,
            len,
            _t: PhantomData,
        })
    }
}

impl<T: Plain> std::ops::Deref for WeightBuf<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the mapping holds `offset + len * size_of::<T>()` zero-initialised bytes,
        // page (so T-) aligned at `offset`, and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset) as *const T, self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for WeightBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(self.offset) as *mut T, self.len) }
    }
}
