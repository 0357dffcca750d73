"""OCSP stapling on Python's `ssl.SSLContext`, through ctypes calls into the libssl that Python's
own `_ssl` module is linked to (the `ssl` module has no server-side stapling API).

How: the `SSL_CTX *` of an `SSLContext` is the first field after `PyObject_HEAD` in CPython's
`PySSLContext` struct (Modules/_ssl.c, unchanged from 3.7 to 3.13), so it is read at offset
`object.__basicsize__` of the object. Before that pointer is used it is checked: the process is
CPython, the libssl reached through `_ssl`'s own shared object reports the version number the
`ssl` module reports, and three libssl getters on the pointer (`SSL_CTX_get_options`,
`SSL_CTX_get_security_level`, `SSL_CTX_get_num_tickets`) agree with what `SSLContext.options`,
`.security_level` and `.num_tickets` say. After installing the status callback
(`SSL_CTX_set_tlsext_status_cb`, a macro over `SSL_CTX_callback_ctrl(ctx,
SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, cb)`) it is read back with `SSL_CTRL_GET_TLSEXT_STATUS_REQ_CB`.
Anything that does not match raises `StaplingUnavailable`: the caller logs a warning and serves
without stapling.

OpenSSL calls the callback during a handshake only when the client sent status_request, after
the SNI callback, with the SSL_CTX of the certificate chosen; the callback hands OpenSSL a copy of
that certificate's response in a buffer from `CRYPTO_malloc` (OpenSSL frees it with the SSL) by
`SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len, buf)`
(`SSL_set_tlsext_status_ocsp_resp`).
"""

from __future__ import annotations

import ctypes
import logging
import platform
import ssl
import time
from collections.abc import Callable

from proxy.lb.ocsp import OcspError, Staple, staple_for

__all__ = ["OcspStapling", "SslLib", "StaplingUnavailable", "StatusCallback", "status_callback"]

log = logging.getLogger("tierproxy.lb")

# openssl/ssl.h and openssl/tls1.h (1.1.1 and 3.x alike)
SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63
SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71
SSL_CTRL_GET_TLSEXT_STATUS_REQ_CB = 128
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_NOACK = 3

# int (*cb)(SSL *s, void *arg)
StatusCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class StaplingUnavailable(RuntimeError):
    """This Python/OpenSSL cannot be driven safely through ctypes: serve without stapling."""


def _open_libssl() -> ctypes.CDLL:
    import _ssl  # the ssl module's own extension: its libssl is the one its contexts live in

    path = getattr(_ssl, "__file__", None)
    try:
        # dlsym on _ssl's handle searches _ssl and then the libraries it was linked with; with
        # _ssl built into the interpreter, the process's own symbols.
        return ctypes.CDLL(path) if path else ctypes.CDLL(None)
    except OSError as exc:
        raise StaplingUnavailable(f"cannot open the _ssl module's libraries: {exc}") from exc


class SslLib:
    """The few libssl calls stapling needs, on the library Python's `ssl` module uses."""

    def __init__(self) -> None:
        if platform.python_implementation() != "CPython":
            raise StaplingUnavailable(f"{platform.python_implementation()}: the PySSLContext layout is CPython's")
        lib = _open_libssl()
        try:
            self._version = lib.OpenSSL_version_num
            self._get_options = lib.SSL_CTX_get_options
            self._get_security_level = lib.SSL_CTX_get_security_level
            self._get_num_tickets = lib.SSL_CTX_get_num_tickets
            self._ctx_ctrl = lib.SSL_CTX_ctrl
            self._callback_ctrl = lib.SSL_CTX_callback_ctrl
            self._ssl_ctrl = lib.SSL_ctrl
            self._malloc = lib.CRYPTO_malloc
        except AttributeError as exc:
            raise StaplingUnavailable(f"libssl lacks a function stapling needs: {exc}") from exc
        self._version.restype = ctypes.c_ulong
        self._version.argtypes = []
        # uint64_t in OpenSSL 3, unsigned long (64 bits on LP64) in 1.1.1
        self._get_options.restype = ctypes.c_uint64
        self._get_options.argtypes = [ctypes.c_void_p]
        self._get_security_level.restype = ctypes.c_int
        self._get_security_level.argtypes = [ctypes.c_void_p]
        self._get_num_tickets.restype = ctypes.c_size_t
        self._get_num_tickets.argtypes = [ctypes.c_void_p]
        self._ctx_ctrl.restype = ctypes.c_long
        self._ctx_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self._callback_ctrl.restype = ctypes.c_long
        self._callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, StatusCallback]
        self._ssl_ctrl.restype = ctypes.c_long
        self._ssl_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self._malloc.restype = ctypes.c_void_p
        self._malloc.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
        got = self._version()
        if got != ssl.OPENSSL_VERSION_NUMBER:
            raise StaplingUnavailable(f"libssl reached by ctypes is 0x{got:x}, the ssl module's is "
                                      f"0x{ssl.OPENSSL_VERSION_NUMBER:x}")  # fmt: skip

    def ctx_pointer(self, ctx: ssl.SSLContext) -> int:
        """The `SSL_CTX *` of `ctx`, checked against what the ssl module reports."""
        import _ssl

        if not isinstance(ctx, _ssl._SSLContext):
            raise StaplingUnavailable(f"{type(ctx).__name__} is not an ssl.SSLContext")
        offset = object.__basicsize__  # the end of PyObject_HEAD
        if _ssl._SSLContext.__basicsize__ < offset + ctypes.sizeof(ctypes.c_void_p):
            raise StaplingUnavailable("_ssl._SSLContext is smaller than PyObject_HEAD plus a pointer")
        ptr = ctypes.c_void_p.from_address(id(ctx) + offset).value
        if not ptr:
            raise StaplingUnavailable("no SSL_CTX pointer where PySSLContext keeps it")
        seen = (self._get_options(ptr), self._get_security_level(ptr), self._get_num_tickets(ptr))
        said = (int(ctx.options), ctx.security_level, ctx.num_tickets)
        if seen != said:
            raise StaplingUnavailable(f"the SSL_CTX read through ctypes says {seen} (options, security level, "
                                      f"tickets), the ssl module {said}")  # fmt: skip
        return ptr

    def set_status_callback(self, ctx: ssl.SSLContext, callback: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        """`SSL_CTX_set_tlsext_status_cb(ctx, callback)`, read back to check it took. The caller
        keeps `callback` alive as long as `ctx` (it is kept on the context object)."""
        ptr = self.ctx_pointer(ctx)
        if self._callback_ctrl(ptr, SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, callback) != 1:
            raise StaplingUnavailable("SSL_CTX_set_tlsext_status_cb refused the callback")
        slot = ctypes.c_void_p()
        self._ctx_ctrl(ptr, SSL_CTRL_GET_TLSEXT_STATUS_REQ_CB, 0, ctypes.byref(slot))
        if slot.value != ctypes.cast(callback, ctypes.c_void_p).value:
            raise StaplingUnavailable("the status callback read back is not the one set")
        ctx._tierproxy_ocsp_callback = callback  # type: ignore[attr-defined]

    def give_response(self, ssl_ptr: int, der: bytes) -> bool:
        """`SSL_set_tlsext_status_ocsp_resp(ssl, copy of der)`: OpenSSL owns (and frees) the copy."""
        buf = self._malloc(len(der), b"tierproxy/ocspstaple", 0)
        if not buf:
            return False
        ctypes.memmove(buf, der, len(der))
        return self._ssl_ctrl(ssl_ptr, SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(der), buf) == 1


def status_callback(lib: SslLib, staple: Staple, on_stapled: Callable[[], None],
                    on_stale: Callable[[Staple], None]) -> ctypes._CFuncPtr:  # type: ignore[name-defined]  # fmt: skip
    """The callback for one certificate's context: staple `staple` while it is fresh."""

    def callback(ssl_ptr: int | None, _arg: int | None) -> int:
        try:
            if not ssl_ptr:
                return SSL_TLSEXT_ERR_NOACK
            if not staple.fresh(time.time()):
                on_stale(staple)
                return SSL_TLSEXT_ERR_NOACK
            if not lib.give_response(ssl_ptr, staple.der):
                return SSL_TLSEXT_ERR_NOACK
            on_stapled()
            return SSL_TLSEXT_ERR_OK
        except Exception:  # an exception must not cross into OpenSSL: no staple this time
            log.exception("ocsp status callback failed")
            return SSL_TLSEXT_ERR_NOACK

    return StatusCallback(callback)


class OcspStapling:
    """One listener's stapling: libssl opened at first use (only when a certificate has an
    `ocsp_response_file`), the handshakes stapled, the warnings already logged."""

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self.stapled = 0  # handshakes that carried a response
        self._lib: SslLib | None = None
        self._unavailable: str | None = None

    def _library(self) -> SslLib | None:
        if self._lib is None and self._unavailable is None:
            try:
                self._lib = SslLib()
            except StaplingUnavailable as exc:
                self._give_up(str(exc))
        return self._lib

    def _give_up(self, why: str) -> None:
        self._unavailable = why
        self._lib = None
        log.warning("ocsp stapling unavailable: serving without it",
                    extra={"listener": self.listener, "error": why})  # fmt: skip

    def _count(self) -> None:
        self.stapled += 1

    def attach(self, ctx: ssl.SSLContext, cert_file: str, response_file: str) -> Staple | None:
        """Staple `response_file` on handshakes of `ctx` if it is a fresh response for the leaf of
        `cert_file`; otherwise say why not in the log (the context serves without a staple)."""
        try:
            with open(response_file, "rb") as f:
                response = f.read()
            with open(cert_file, "rb") as f:
                chain = f.read()
            staple = staple_for(response, chain, time.time())
        except (OSError, OcspError) as exc:
            log.warning("ocsp response not stapled",
                        extra={"listener": self.listener, "file": response_file, "error": str(exc)})  # fmt: skip
            return None
        lib = self._library()
        if lib is None:
            return None
        stale_logged = []

        def on_stale(s: Staple) -> None:
            if not stale_logged:
                stale_logged.append(True)
                log.warning("ocsp response not stapled: expired since it was loaded",
                            extra={"listener": self.listener, "file": response_file})  # fmt: skip

        try:
            lib.set_status_callback(ctx, status_callback(lib, staple, self._count, on_stale))
        except StaplingUnavailable as exc:
            self._give_up(str(exc))
            return None
        if staple.status != "good":
            log.warning("ocsp response stapled says the certificate is " + staple.status,
                        extra={"listener": self.listener, "file": response_file})  # fmt: skip
        return staple
