//! The shim's C functions (shim/group.h). Each returns NULL or a message to free with
//! `gb_free_error`.

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct Store {
    _private: [u8; 0],
}

#[repr(C)]
pub struct Group {
    _private: [u8; 0],
}

unsafe extern "C" {
    pub fn gb_free_error(error: *mut c_char);
    pub fn gb_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut Store,
    ) -> *mut c_char;
    pub fn gb_store_free(store: *mut Store);
    pub fn gb_store_set(
        store: *mut Store,
        key: *const c_char,
        data: *const u8,
        n: usize,
    ) -> *mut c_char;
    pub fn gb_store_check(
        store: *mut Store,
        key: *const c_char,
        present: *mut c_int,
    ) -> *mut c_char;
    pub fn gb_group_new_gloo(
        store: *mut Store,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        hostname: *const c_char,
        interface_name: *const c_char,
        out: *mut *mut Group,
    ) -> *mut c_char;
    pub fn gb_group_new_nccl(
        store: *mut Store,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut Group,
    ) -> *mut c_char;
    pub fn gb_group_free(group: *mut Group);
    pub fn gb_all_reduce_sum(
        group: *mut Group,
        tensors: *const *mut c_void,
        n: usize,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn gb_broadcast(
        group: *mut Group,
        tensors: *const *mut c_void,
        n: usize,
        root: c_int,
        timeout_ms: i64,
    ) -> *mut c_char;
    pub fn gb_barrier(group: *mut Group, timeout_ms: i64) -> *mut c_char;
    pub fn gb_has_nccl() -> c_int;
}
