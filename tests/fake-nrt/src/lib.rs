//! A fake Neuron runtime: a shared library exporting the `nrt.h` entry points aisle calls,
//! so CI exercises library loading, symbol lookup, tensor binding, execution and error paths
//! without Neuron hardware.
//!
//! Owns: host-memory "device" tensors (filled with 0xAB garbage when allocated, as real
//! device memory is not zeroed), tensor sets, and "NEFFs" that are JSON files declaring
//! their tensors plus a tiny program standing in for the model:
//!   each query row writes its token id into key cache `kv_cache.0.key` at (slot, head 0,
//!   position, dim 0), then gets one-hot logits at (Σ of cached values at the positions its
//!   mask leaves open) mod vocab.
//! Greedy decoding through this program yields: next token = (sum of the sequence so far)
//! mod vocab, which only holds if slots, positions, masks and the shared KV state are all
//! bound and carried correctly.
//! A NEFF may also ask for a failing `nrt_load` or `nrt_execute` status (error paths).
//! Must not: be linked into aisle (it is opened at run time, like the real libnrt).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};

use serde::Deserialize;

const NRT_SUCCESS: c_int = 0;
const NRT_INVALID: c_int = 2;
const USAGE_INPUT: c_int = 0;
const USAGE_OUTPUT: c_int = 1;
const NAME_MAX: usize = 256;

#[derive(Deserialize)]
struct Spec {
    name: String,
    usage: String, // "input" | "output"
    dtype: c_int,  // nrt_dtype_t
    shape: Vec<u32>,
}

impl Spec {
    fn bytes(&self) -> usize {
        let elem = if self.dtype == 3 { 2 } else { 4 };
        self.shape.iter().map(|&d| d as usize).product::<usize>() * elem
    }

    fn usage(&self) -> c_int {
        if self.usage == "output" {
            USAGE_OUTPUT
        } else {
            USAGE_INPUT
        }
    }
}

#[derive(Deserialize)]
pub struct Neff {
    fake_neff: u32,
    kind: String, // "context_encoding" | "token_generation"
    vocab: usize,
    tensors: Vec<Spec>,
    #[serde(default)]
    fail_load: Option<c_int>,
    #[serde(default)]
    fail_execute: Option<c_int>,
}

pub struct FakeTensor {
    data: Vec<u8>,
}

type Set = Vec<(String, *mut FakeTensor)>;

#[repr(C)]
pub struct TensorInfo {
    name: [c_char; NAME_MAX],
    usage: c_int,
    size: usize,
    dtype: c_int,
    shape: *mut u32,
    ndim: u32,
}

#[no_mangle]
pub extern "C" fn nrt_init(_framework: c_int, _fw: *const c_char, _fal: *const c_char) -> c_int {
    NRT_SUCCESS
}

#[no_mangle]
pub extern "C" fn nrt_close() {}

/// # Safety
/// `bytes` is valid for `size` bytes; `model` is writable.
#[no_mangle]
pub unsafe extern "C" fn nrt_load(
    bytes: *const c_void,
    size: usize,
    _nc: i32,
    _count: i32,
    model: *mut *mut Neff,
) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let slice = std::slice::from_raw_parts(bytes.cast::<u8>(), size);
        let Ok(neff) = serde_json::from_slice::<Neff>(slice) else {
            return NRT_INVALID;
        };
        if neff.fake_neff != 1 {
            return NRT_INVALID;
        }
        if let Some(code) = neff.fail_load {
            return code;
        }
        *model = Box::into_raw(Box::new(neff));
        NRT_SUCCESS
    }
}

/// # Safety
/// `model` came from `nrt_load`.
#[no_mangle]
pub unsafe extern "C" fn nrt_unload(model: *mut Neff) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        drop(Box::from_raw(model));
        NRT_SUCCESS
    }
}

/// The info array: a u64 count followed by `count` infos (allocated as u64 words so the
/// alignment holds).
fn info_words(count: usize) -> usize {
    1 + count * std::mem::size_of::<TensorInfo>().div_ceil(8)
}

/// # Safety
/// `model` came from `nrt_load`; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn nrt_get_model_tensor_info(model: *mut Neff, out: *mut *mut u64) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let neff = &*model;
        let n = neff.tensors.len();
        let words = vec![0u64; info_words(n)].into_boxed_slice();
        let base = Box::into_raw(words).cast::<u64>();
        *base = n as u64;
        let infos = base.add(1).cast::<TensorInfo>();
        for (i, t) in neff.tensors.iter().enumerate() {
            let mut name = [0 as c_char; NAME_MAX];
            for (d, s) in name.iter_mut().zip(t.name.bytes().take(NAME_MAX - 1)) {
                *d = s as c_char;
            }
            let shape = Box::into_raw(t.shape.clone().into_boxed_slice()).cast::<u32>();
            infos.add(i).write(TensorInfo {
                name,
                usage: t.usage(),
                size: t.bytes(),
                dtype: t.dtype,
                shape,
                ndim: t.shape.len() as u32,
            });
        }
        *out = base;
        NRT_SUCCESS
    }
}

/// # Safety
/// `arr` came from `nrt_get_model_tensor_info`.
#[no_mangle]
pub unsafe extern "C" fn nrt_free_model_tensor_info(arr: *mut u64) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let n = *arr as usize;
        let infos = arr.add(1).cast::<TensorInfo>();
        for i in 0..n {
            let t = &*infos.add(i);
            let shape = std::ptr::slice_from_raw_parts_mut(t.shape, t.ndim as usize);
            drop(Box::from_raw(shape));
        }
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(arr, info_words(n))));
        NRT_SUCCESS
    }
}

/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_allocate(
    _placement: c_int,
    _nc: c_int,
    size: usize,
    _name: *const c_char,
    out: *mut *mut FakeTensor,
) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        *out = Box::into_raw(Box::new(FakeTensor { data: vec![0xAB; size] }));
        NRT_SUCCESS
    }
}

/// # Safety
/// `*t` came from `nrt_tensor_allocate` (or is null).
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_free(t: *mut *mut FakeTensor) {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        if !(*t).is_null() {
            drop(Box::from_raw(*t));
            *t = std::ptr::null_mut();
        }
    }
}

/// # Safety
/// `t` is a live tensor; `buf` is writable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_read(t: *const FakeTensor, buf: *mut c_void, offset: usize, size: usize) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let data = &(*t).data;
        if offset.checked_add(size).is_none_or(|end| end > data.len()) {
            return NRT_INVALID;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr().add(offset), buf.cast::<u8>(), size);
        NRT_SUCCESS
    }
}

/// # Safety
/// `t` is a live tensor; `buf` is readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn nrt_tensor_write(t: *mut FakeTensor, buf: *const c_void, offset: usize, size: usize) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let data = &mut (*t).data;
        if offset.checked_add(size).is_none_or(|end| end > data.len()) {
            return NRT_INVALID;
        }
        std::ptr::copy_nonoverlapping(buf.cast::<u8>(), data.as_mut_ptr().add(offset), size);
        NRT_SUCCESS
    }
}

/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn nrt_allocate_tensor_set(out: *mut *mut Set) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        *out = Box::into_raw(Box::default());
        NRT_SUCCESS
    }
}

/// # Safety
/// `*set` came from `nrt_allocate_tensor_set` (or is null).
#[no_mangle]
pub unsafe extern "C" fn nrt_destroy_tensor_set(set: *mut *mut Set) {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        if !(*set).is_null() {
            drop(Box::from_raw(*set));
            *set = std::ptr::null_mut();
        }
    }
}

/// # Safety
/// `set` is live, `name` NUL-terminated, `t` a live tensor.
#[no_mangle]
pub unsafe extern "C" fn nrt_add_tensor_to_tensor_set(set: *mut Set, name: *const c_char, t: *mut FakeTensor) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let name = CStr::from_ptr(name).to_string_lossy().into_owned();
        let set = &mut *set;
        set.retain(|(n, _)| *n != name);
        set.push((name, t));
        NRT_SUCCESS
    }
}

/// # Safety
/// `model` came from `nrt_load`; both sets are live, as are their tensors.
#[no_mangle]
pub unsafe extern "C" fn nrt_execute(model: *mut Neff, inputs: *const Set, outputs: *mut Set) -> c_int {
    // SAFETY: the caller keeps libnrt's contract for this entry point (nrt.h): every pointer
    // argument is valid for the access its parameter describes, and handles come from this library.
    unsafe {
        let neff = &*model;
        let mut bound: HashMap<&str, *mut FakeTensor> = HashMap::new();
        for (set, usage) in [(&*inputs, USAGE_INPUT), (&*outputs, USAGE_OUTPUT)] {
            for spec in neff.tensors.iter().filter(|s| s.usage() == usage) {
                let Some(&(_, t)) = set.iter().find(|(n, _)| *n == spec.name) else {
                    return NRT_INVALID; // a tensor the NEFF needs is not bound
                };
                if (*t).data.len() != spec.bytes() {
                    return NRT_INVALID; // bound tensor of the wrong size
                }
                bound.insert(spec.name.as_str(), t);
            }
        }
        if let Some(code) = neff.fail_execute {
            return code;
        }
        run(neff, &bound);
        NRT_SUCCESS
    }
}

fn i32s(t: *mut FakeTensor) -> Vec<i32> {
    // SAFETY: `t` is a live, bound tensor.
    let d = unsafe { &(*t).data };
    d.chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32s(t: *mut FakeTensor) -> Vec<f32> {
    i32s(t).into_iter().map(|x| f32::from_bits(x as u32)).collect()
}

/// The stand-in model program (see the module doc).
fn run(neff: &Neff, bound: &HashMap<&str, *mut FakeTensor>) {
    let key = bound["kv_cache.0.key"];
    let spec = neff
        .tensors
        .iter()
        .find(|s| s.name == "kv_cache.0.key")
        .expect("bound above");
    let (heads, max_len, dim) = (spec.shape[1] as usize, spec.shape[2] as usize, spec.shape[3] as usize);
    let ids = i32s(bound["input_ids"]);
    let pos = i32s(bound["position_ids"]);
    let mask = f32s(bound["attention_mask"]);
    let rows = ids.len();
    let kv_len = mask.len() / rows;
    // Row r writes into slot `slots[r]`: the `slot` input (context encoding) or r itself.
    let slots: Vec<usize> = match neff.kind.as_str() {
        "context_encoding" => vec![i32s(bound["slot"])[0] as usize; rows],
        _ => (0..rows).collect(),
    };
    let at = |slot: usize, p: usize| ((slot * heads) * max_len + p) * dim * 4;
    // SAFETY: `key` is a live, bound tensor of the declared shape.
    let cache = unsafe { &mut (*key).data };
    for r in 0..rows {
        let o = at(slots[r], pos[r] as usize);
        cache[o..o + 4].copy_from_slice(&(ids[r] as f32).to_le_bytes());
    }
    let mut logits = vec![0f32; rows * neff.vocab];
    for r in 0..rows {
        let sum: f32 = (0..kv_len)
            .filter(|&j| mask[r * kv_len + j] == 0.0)
            .map(|j| {
                let o = at(slots[r], j);
                f32::from_le_bytes([cache[o], cache[o + 1], cache[o + 2], cache[o + 3]])
            })
            .sum();
        logits[r * neff.vocab + (sum as usize) % neff.vocab] = 1.0;
    }
    // SAFETY: `logits` is a live, bound tensor sized rows × vocab f32.
    let out = unsafe { &mut (*bound["logits"]).data };
    for (d, x) in out.chunks_exact_mut(4).zip(&logits) {
        d.copy_from_slice(&x.to_le_bytes());
    }
}
