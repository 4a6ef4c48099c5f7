//! A runtime-loaded binding of the Neuron runtime library (`libnrt.so`), no link-time
//! dependency: the functions we call, with signatures from the public `nrt.h` /
//! `nrt_experimental.h`, looked up with `libloading`, wrapped in owning handles, and every
//! `NRT_STATUS` turned into an `NrtError` naming the call.
//!
//! Owns: finding and opening the library, `nrt_init`/`nrt_close`, models (NEFF load/unload,
//! tensor info), tensors (allocate/free, read/write) and tensor sets, `nrt_execute`.
//! Must not: know about buckets, slots or the model (the graphs in `neuron/mod.rs` do).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::Arc;

use libloading::Library;

/// `NRT_STATUS` values from `nrt_status.h`.
fn status_name(code: c_int) -> &'static str {
    match code {
        0 => "NRT_SUCCESS",
        1 => "NRT_FAILURE",
        2 => "NRT_INVALID",
        3 => "NRT_INVALID_HANDLE",
        4 => "NRT_RESOURCE",
        5 => "NRT_TIMEOUT",
        6 => "NRT_HW_ERROR",
        7 => "NRT_QUEUE_FULL",
        9 => "NRT_LOAD_NOT_ENOUGH_NC",
        10 => "NRT_UNSUPPORTED_NEFF_VERSION",
        11 => "NRT_FAIL_HOST_MEM_ALLOC",
        13 => "NRT_UNINITIALIZED",
        14 => "NRT_CLOSED",
        1002 => "NRT_EXEC_BAD_INPUT",
        1003 => "NRT_EXEC_COMPLETED_WITH_NUM_ERR",
        1004 => "NRT_EXEC_COMPLETED_WITH_ERR",
        1005 => "NRT_EXEC_NC_BUSY",
        1006 => "NRT_EXEC_OOB",
        _ => "unknown status",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NrtError {
    #[error("the Neuron runtime library (libnrt) could not be loaded; tried: {tried}. Install the Neuron runtime (package aws-neuronx-runtime-lib, which puts libnrt.so.1 in /opt/aws/neuron/lib) or set AISLE_LIBNRT to the path of libnrt.so")]
    NotFound { tried: String },
    #[error("{path} is not a usable libnrt: symbol `{symbol}` is missing ({why})")]
    MissingSymbol {
        path: String,
        symbol: &'static str,
        why: String,
    },
    #[error("{call} failed: {name} ({code})")]
    Status {
        call: &'static str,
        code: i32,
        name: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Map an `NRT_STATUS` to `Ok` or an error naming `call`.
pub fn check(call: &'static str, code: c_int) -> Result<(), NrtError> {
    match code {
        0 => Ok(()),
        code => Err(NrtError::Status {
            call,
            code,
            name: status_name(code),
        }),
    }
}

/// `nrt_tensor_usage_t`
pub const USAGE_INPUT: c_int = 0;
pub const USAGE_OUTPUT: c_int = 1;
/// `nrt_tensor_placement_t`
pub const PLACEMENT_DEVICE: c_int = 0;
/// `nrt_framework_type_t`
pub const FRAMEWORK_NO_FW: c_int = 1;
pub const TENSOR_NAME_MAX: usize = 256;

/// `nrt_tensor_info_t`
#[repr(C)]
pub struct RawTensorInfo {
    pub name: [c_char; TENSOR_NAME_MAX],
    pub usage: c_int,
    pub size: usize,
    pub dtype: c_int,
    pub shape: *mut u32,
    pub ndim: u32,
}

/// `nrt_tensor_info_array_t` (a count, then that many `nrt_tensor_info_t`)
#[repr(C)]
pub struct RawTensorInfoArray {
    pub tensor_count: u64,
    pub tensor_array: [RawTensorInfo; 0],
}

type Status = c_int;
type Handle = *mut c_void;

/// The entry points, resolved once.
struct Api {
    init: unsafe extern "C" fn(c_int, *const c_char, *const c_char) -> Status,
    close: unsafe extern "C" fn(),
    load: unsafe extern "C" fn(*const c_void, usize, i32, i32, *mut Handle) -> Status,
    unload: unsafe extern "C" fn(Handle) -> Status,
    get_model_tensor_info: unsafe extern "C" fn(Handle, *mut *mut RawTensorInfoArray) -> Status,
    free_model_tensor_info: unsafe extern "C" fn(*mut RawTensorInfoArray) -> Status,
    tensor_allocate: unsafe extern "C" fn(c_int, c_int, usize, *const c_char, *mut Handle) -> Status,
    tensor_free: unsafe extern "C" fn(*mut Handle),
    tensor_read: unsafe extern "C" fn(Handle, *mut c_void, usize, usize) -> Status,
    tensor_write: unsafe extern "C" fn(Handle, *const c_void, usize, usize) -> Status,
    allocate_tensor_set: unsafe extern "C" fn(*mut Handle) -> Status,
    destroy_tensor_set: unsafe extern "C" fn(*mut Handle),
    add_tensor_to_tensor_set: unsafe extern "C" fn(Handle, *const c_char, Handle) -> Status,
    execute: unsafe extern "C" fn(Handle, Handle, Handle) -> Status,
}

/// An open, initialised runtime. `nrt_close` runs when the last handle is dropped.
pub struct Runtime {
    api: Api,
    path: String,
    _lib: Library,
}

// SAFETY: the runtime's entry points are thread-safe C functions (nrt.h); `Runtime` only
// holds their addresses and the library that keeps them mapped. Handles are used from the one
// engine thread that owns the executor.
unsafe impl Send for Runtime {}
// SAFETY: as for `Send`: every call through `api` is thread-safe in libnrt.
unsafe impl Sync for Runtime {}

/// Where `libnrt` is looked for, in order: `AISLE_LIBNRT`, the loader's search path, and the
/// Neuron SDK's install directory.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("AISLE_LIBNRT") {
        paths.push(PathBuf::from(p));
    }
    for p in [
        "libnrt.so.1",
        "libnrt.so",
        "/opt/aws/neuron/lib/libnrt.so.1",
        "/opt/aws/neuron/lib/libnrt.so",
    ] {
        paths.push(PathBuf::from(p));
    }
    paths
}

/// Resolve one symbol as a function pointer of type `T`.
fn symbol<T: Copy>(lib: &Library, path: &str, name: &'static str) -> Result<T, NrtError> {
    let bytes = format!("{name}\0");
    // SAFETY: `T` is the function-pointer type `nrt.h` declares for `name`.
    unsafe { lib.get::<T>(bytes.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| NrtError::MissingSymbol {
            path: path.to_string(),
            symbol: name,
            why: e.to_string(),
        })
}

impl Api {
    fn resolve(lib: &Library, path: &str) -> Result<Api, NrtError> {
        Ok(Api {
            init: symbol(lib, path, "nrt_init")?,
            close: symbol(lib, path, "nrt_close")?,
            load: symbol(lib, path, "nrt_load")?,
            unload: symbol(lib, path, "nrt_unload")?,
            get_model_tensor_info: symbol(lib, path, "nrt_get_model_tensor_info")?,
            free_model_tensor_info: symbol(lib, path, "nrt_free_model_tensor_info")?,
            tensor_allocate: symbol(lib, path, "nrt_tensor_allocate")?,
            tensor_free: symbol(lib, path, "nrt_tensor_free")?,
            tensor_read: symbol(lib, path, "nrt_tensor_read")?,
            tensor_write: symbol(lib, path, "nrt_tensor_write")?,
            allocate_tensor_set: symbol(lib, path, "nrt_allocate_tensor_set")?,
            destroy_tensor_set: symbol(lib, path, "nrt_destroy_tensor_set")?,
            add_tensor_to_tensor_set: symbol(lib, path, "nrt_add_tensor_to_tensor_set")?,
            execute: symbol(lib, path, "nrt_execute")?,
        })
    }
}

impl Runtime {
    /// Open the first loadable library of `paths`, resolve every entry point, `nrt_init`.
    pub fn open(paths: &[PathBuf]) -> Result<Arc<Runtime>, NrtError> {
        let mut tried = Vec::new();
        for p in paths {
            // SAFETY: loading a shared library runs its initialisers; libnrt's are benign.
            match unsafe { Library::new(p) } {
                Ok(lib) => {
                    let path = p.display().to_string();
                    let api = Api::resolve(&lib, &path)?;
                    let empty = c"".as_ptr();
                    // SAFETY: both strings are NUL-terminated and outlive the call.
                    check("nrt_init", unsafe { (api.init)(FRAMEWORK_NO_FW, empty, empty) })?;
                    return Ok(Arc::new(Runtime { api, path, _lib: lib }));
                }
                Err(e) => tried.push(format!("{} ({e})", p.display())),
            }
        }
        Err(NrtError::NotFound {
            tried: tried.join("; "),
        })
    }

    /// The library actually opened.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: every model, tensor and set holds an `Arc<Runtime>`, so none outlives this.
        unsafe { (self.api.close)() }
    }
}

/// One tensor as the loaded NEFF declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub usage: c_int,
    pub size: usize,
    pub dtype: c_int,
    pub shape: Vec<u32>,
}

/// A NEFF loaded onto NeuronCores; unloaded on drop.
pub struct Model {
    rt: Arc<Runtime>,
    handle: Handle,
}

// SAFETY: the handle is an opaque libnrt object, owned here alone and usable from any thread;
// libnrt's calls on it are thread-safe, and it is freed once, on drop.
unsafe impl Send for Model {}

impl Model {
    pub fn load(rt: &Arc<Runtime>, neff: &[u8], start_nc: i32, nc_count: i32) -> Result<Model, NrtError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: `neff` is valid for its length; `handle` receives the model.
        check("nrt_load", unsafe {
            (rt.api.load)(neff.as_ptr().cast(), neff.len(), start_nc, nc_count, &mut handle)
        })?;
        Ok(Model { rt: rt.clone(), handle })
    }

    /// The model's input and output tensors (`nrt_get_model_tensor_info`).
    pub fn tensor_info(&self) -> Result<Vec<TensorInfo>, NrtError> {
        let api = &self.rt.api;
        let mut arr: *mut RawTensorInfoArray = std::ptr::null_mut();
        // SAFETY: the runtime allocates `arr`; it is read here and freed just below.
        check("nrt_get_model_tensor_info", unsafe {
            (api.get_model_tensor_info)(self.handle, &mut arr)
        })?;
        if arr.is_null() {
            return Err(NrtError::Invalid("nrt_get_model_tensor_info returned no array".into()));
        }
        // SAFETY: the array holds `tensor_count` entries, each shape `ndim` long.
        let infos = unsafe {
            let n = (*arr).tensor_count as usize;
            let first = std::ptr::addr_of!((*arr).tensor_array).cast::<RawTensorInfo>();
            (0..n)
                .map(|i| {
                    let t = &*first.add(i);
                    let shape = match t.shape.is_null() {
                        true => Vec::new(),
                        false => std::slice::from_raw_parts(t.shape, t.ndim as usize).to_vec(),
                    };
                    TensorInfo {
                        name: CStr::from_ptr(t.name.as_ptr()).to_string_lossy().into_owned(),
                        usage: t.usage,
                        size: t.size,
                        dtype: t.dtype,
                        shape,
                    }
                })
                .collect()
        };
        // SAFETY: `arr` came from nrt_get_model_tensor_info and is freed once.
        check("nrt_free_model_tensor_info", unsafe {
            (api.free_model_tensor_info)(arr)
        })?;
        Ok(infos)
    }

    /// Run the model; outputs land in the tensors of `outputs`.
    pub fn execute(&self, inputs: &TensorSet, outputs: &TensorSet) -> Result<(), NrtError> {
        // SAFETY: both sets and every tensor in them are alive (held by the caller).
        check("nrt_execute", unsafe {
            (self.rt.api.execute)(self.handle, inputs.handle, outputs.handle)
        })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the handle came from nrt_load and is unloaded once.
        let _ = unsafe { (self.rt.api.unload)(self.handle) };
    }
}

/// A tensor in device memory; freed on drop.
pub struct Tensor {
    rt: Arc<Runtime>,
    handle: Handle,
    size: usize,
}

// SAFETY: the handle is an opaque libnrt object, owned here alone and usable from any thread;
// libnrt's calls on it are thread-safe, and it is freed once, on drop.
unsafe impl Send for Tensor {}

impl Tensor {
    pub fn allocate(rt: &Arc<Runtime>, nc: i32, size: usize, name: &str) -> Result<Tensor, NrtError> {
        let cname = c_name(name)?;
        let mut handle = std::ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated; `handle` receives the tensor.
        check("nrt_tensor_allocate", unsafe {
            (rt.api.tensor_allocate)(PLACEMENT_DEVICE, nc, size, cname.as_ptr(), &mut handle)
        })?;
        Ok(Tensor {
            rt: rt.clone(),
            handle,
            size,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn write(&self, bytes: &[u8], offset: usize) -> Result<(), NrtError> {
        // SAFETY: `bytes` is valid for its length; the runtime checks the range.
        check("nrt_tensor_write", unsafe {
            (self.rt.api.tensor_write)(self.handle, bytes.as_ptr().cast(), offset, bytes.len())
        })
    }

    pub fn read(&self, buf: &mut [u8], offset: usize) -> Result<(), NrtError> {
        // SAFETY: `buf` is valid for writes of its length; the runtime checks the range.
        check("nrt_tensor_read", unsafe {
            (self.rt.api.tensor_read)(self.handle, buf.as_mut_ptr().cast(), offset, buf.len())
        })
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        // SAFETY: the handle came from nrt_tensor_allocate and is freed once.
        unsafe { (self.rt.api.tensor_free)(&mut self.handle) }
    }
}

fn c_name(name: &str) -> Result<CString, NrtError> {
    CString::new(name).map_err(|_| NrtError::Invalid(format!("tensor name {name:?} contains NUL")))
}

/// Named tensors passed to `nrt_execute`. The tensors must outlive the set: the owner keeps
/// both (see `neuron::Graph`).
pub struct TensorSet {
    rt: Arc<Runtime>,
    handle: Handle,
}

// SAFETY: the handle is an opaque libnrt object, owned here alone and usable from any thread;
// libnrt's calls on it are thread-safe, and it is freed once, on drop.
unsafe impl Send for TensorSet {}

impl TensorSet {
    pub fn new(rt: &Arc<Runtime>) -> Result<TensorSet, NrtError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: `handle` receives the new set.
        check("nrt_allocate_tensor_set", unsafe {
            (rt.api.allocate_tensor_set)(&mut handle)
        })?;
        Ok(TensorSet { rt: rt.clone(), handle })
    }

    pub fn add(&mut self, name: &str, tensor: &Tensor) -> Result<(), NrtError> {
        let cname = c_name(name)?;
        // SAFETY: set and tensor are alive; the runtime copies the name.
        check("nrt_add_tensor_to_tensor_set", unsafe {
            (self.rt.api.add_tensor_to_tensor_set)(self.handle, cname.as_ptr(), tensor.handle)
        })
    }
}

impl Drop for TensorSet {
    fn drop(&mut self) {
        // SAFETY: the handle came from nrt_allocate_tensor_set and is destroyed once.
        unsafe { (self.rt.api.destroy_tensor_set)(&mut self.handle) }
    }
}
