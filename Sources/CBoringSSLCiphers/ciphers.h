#ifndef WSBRIDGE_BORINGSSL_CIPHERS_H
#define WSBRIDGE_BORINGSSL_CIPHERS_H
// Four functions of the BoringSSL that swift-nio-ssl links into the binary (its symbols carry the prefix
// CNIOBoringSSL_), declared here because NIOSSL has no way to check a cipher string: NIOSSLContext stops the process
// (a precondition) when SSL_CTX_set_cipher_list fails. wsbridge evaluates --ssl-ciphers with them first, so that a
// string that selects no cipher is a clear error. No library is linked: NIOSSL's objects provide the symbols.
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
const SSL_METHOD *CNIOBoringSSL_TLS_method(void);
SSL_CTX *CNIOBoringSSL_SSL_CTX_new(const SSL_METHOD *method);
int CNIOBoringSSL_SSL_CTX_set_cipher_list(SSL_CTX *ctx, const char *str);
void CNIOBoringSSL_SSL_CTX_free(SSL_CTX *ctx);
void CNIOBoringSSL_ERR_clear_error(void);
#endif
