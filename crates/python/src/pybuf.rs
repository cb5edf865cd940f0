//! Borrowing the bytes of any buffer-protocol object (bytes, bytearray,
//! memoryview, numpy arrays, ...) without copying.
//!
//! The module is built for the stable ABI of CPython 3.10, whose limited API
//! does not yet declare `PyObject_GetBuffer` (it joined in 3.11). The function
//! and the `Py_buffer` layout have been exported unchanged by every CPython
//! since 3.3, so we declare them ourselves.

use std::ffi::{c_char, c_int, c_void};
use std::marker::PhantomData;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// `PyBUF_SIMPLE`: a C-contiguous byte buffer, read-only allowed.
const PYBUF_SIMPLE: c_int = 0;
/// `PyBUF_WRITABLE`.
const PYBUF_WRITABLE: c_int = 0x0001;

/// A held buffer view. Holds the GIL-bound exporter alive; released on drop
/// (which happens with the GIL held: the type is `!Send`, so it can never be
/// moved into a GIL-released closure, only slices borrowed from it can).
pub struct PyBuf<'py> {
    view: Box<RawBuffer>,
    _py: PhantomData<Python<'py>>,
}

impl<'py> PyBuf<'py> {
    /// A contiguous view of `obj`; `writable` demands a writable one.
    pub fn get(obj: &Bound<'py, PyAny>, writable: bool) -> PyResult<Self> {
        let mut view = Box::new(RawBuffer {
            buf: std::ptr::null_mut(),
            obj: std::ptr::null_mut(),
            len: 0,
            itemsize: 0,
            readonly: 0,
            ndim: 0,
            format: std::ptr::null_mut(),
            shape: std::ptr::null_mut(),
            strides: std::ptr::null_mut(),
            suboffsets: std::ptr::null_mut(),
            internal: std::ptr::null_mut(),
        });
        let flags = if writable {
            PYBUF_WRITABLE
        } else {
            PYBUF_SIMPLE
        };
        // SAFETY: `obj` is a live object (we hold a Bound, so the GIL too) and
        // `view` points to writable storage of the Py_buffer layout.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
        if rc != 0 {
            return Err(PyErr::take(obj.py()).unwrap_or_else(|| {
                PyBufferError::new_err("object does not support the buffer protocol")
            }));
        }
        Ok(PyBuf {
            view,
            _py: PhantomData,
        })
    }

    #[allow(dead_code)] // used by the store bindings
    pub fn addr(&self) -> usize {
        self.view.buf as usize
    }

    pub fn len(&self) -> usize {
        self.view.len as usize
    }

    /// The bytes. Valid while `self` lives (the exporter may not resize a
    /// buffer while a view of it is held).
    pub fn as_slice(&self) -> &[u8] {
        if self.view.len == 0 {
            return &[];
        }
        // SAFETY: a successful PyBUF_SIMPLE/WRITABLE request yields a
        // contiguous region of `len` bytes at `buf`, kept alive and unmoved
        // until PyBuffer_Release.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for PyBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is
        // released exactly once; `PyBuf` is !Send and tied to 'py, so the GIL
        // is held here.
        unsafe { PyBuffer_Release(&mut *self.view) }
    }
}
