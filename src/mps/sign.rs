//! Alibaba Cloud RPC signing (v1 HMAC-SHA1 and ACS3-HMAC-SHA256).
