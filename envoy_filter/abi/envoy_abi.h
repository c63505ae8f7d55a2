/*
 * The part of Envoy's dynamic-module C ABI (Envoy 1.40, ABI "v0.2.0") that the
 * resty_ffi filter uses. Written by hand from the ABI's documentation; bindgen
 * turns it into src/abi.rs types and callback declarations at build time.
 *
 * Naming: "envoy_dynamic_module_on_*" are hooks the module exports and Envoy
 * calls; "envoy_dynamic_module_callback_*" are functions the Envoy binary
 * exports and the module calls. Buffers are {pointer, length} structs passed by
 * value; "envoy" buffers are owned by Envoy and valid until the hook returns,
 * "module" buffers are owned by us and only read during the call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- types -- */

typedef struct envoy_dynamic_module_type_envoy_buffer {
  const char *ptr;
  size_t length;
} envoy_dynamic_module_type_envoy_buffer;

typedef struct envoy_dynamic_module_type_module_buffer {
  const char *ptr;
  size_t length;
} envoy_dynamic_module_type_module_buffer;

typedef struct envoy_dynamic_module_type_module_http_header {
  const char *key_ptr;
  size_t key_length;
  const char *value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_module_http_header;

typedef struct envoy_dynamic_module_type_envoy_http_header {
  const char *key_ptr;
  size_t key_length;
  const char *value_ptr;
  size_t value_length;
} envoy_dynamic_module_type_envoy_http_header;

/* Opaque pointers: Envoy's objects (envoy_ptr) and ours (module_ptr). */
typedef void *envoy_dynamic_module_type_http_filter_config_envoy_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_config_module_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_per_route_config_module_ptr;
typedef void *envoy_dynamic_module_type_http_filter_envoy_ptr;
typedef const void *envoy_dynamic_module_type_http_filter_module_ptr;
typedef void *envoy_dynamic_module_type_http_filter_scheduler_module_ptr;

typedef enum envoy_dynamic_module_type_http_header_type {
  envoy_dynamic_module_type_http_header_type_RequestHeader = 0,
  envoy_dynamic_module_type_http_header_type_RequestTrailer = 1,
  envoy_dynamic_module_type_http_header_type_ResponseHeader = 2,
  envoy_dynamic_module_type_http_header_type_ResponseTrailer = 3,
} envoy_dynamic_module_type_http_header_type;

/* "Received" = the chunk of the current body hook; "Buffered" = what filters
 * stopped with StopIterationAndBuffer/Watermark so far. */
typedef enum envoy_dynamic_module_type_http_body_type {
  envoy_dynamic_module_type_http_body_type_ReceivedRequestBody = 0,
  envoy_dynamic_module_type_http_body_type_BufferedRequestBody = 1,
  envoy_dynamic_module_type_http_body_type_ReceivedResponseBody = 2,
  envoy_dynamic_module_type_http_body_type_BufferedResponseBody = 3,
} envoy_dynamic_module_type_http_body_type;

typedef enum envoy_dynamic_module_type_log_level {
  envoy_dynamic_module_type_log_level_Trace = 0,
  envoy_dynamic_module_type_log_level_Debug = 1,
  envoy_dynamic_module_type_log_level_Info = 2,
  envoy_dynamic_module_type_log_level_Warn = 3,
  envoy_dynamic_module_type_log_level_Error = 4,
  envoy_dynamic_module_type_log_level_Critical = 5,
} envoy_dynamic_module_type_log_level;

typedef enum envoy_dynamic_module_type_metadata_source {
  envoy_dynamic_module_type_metadata_source_Dynamic = 0,
  envoy_dynamic_module_type_metadata_source_Route = 1,
  envoy_dynamic_module_type_metadata_source_Cluster = 2,
  envoy_dynamic_module_type_metadata_source_Host = 3,
  envoy_dynamic_module_type_metadata_source_HostLocality = 4,
} envoy_dynamic_module_type_metadata_source;

/* The attributes we read (values are positions in Envoy's attribute list). */
typedef enum envoy_dynamic_module_type_attribute_id {
  envoy_dynamic_module_type_attribute_id_RequestProtocol = 10,
  envoy_dynamic_module_type_attribute_id_SourceAddress = 24,
  envoy_dynamic_module_type_attribute_id_DestinationAddress = 26,
  envoy_dynamic_module_type_attribute_id_ConnectionMtls = 29,
  envoy_dynamic_module_type_attribute_id_ConnectionRequestedServerName = 30,
  envoy_dynamic_module_type_attribute_id_ConnectionTlsVersion = 31,
  envoy_dynamic_module_type_attribute_id_ConnectionSubjectLocalCertificate = 32,
  envoy_dynamic_module_type_attribute_id_ConnectionSubjectPeerCertificate = 33,
  envoy_dynamic_module_type_attribute_id_ConnectionDnsSanLocalCertificate = 34,
  envoy_dynamic_module_type_attribute_id_ConnectionDnsSanPeerCertificate = 35,
  envoy_dynamic_module_type_attribute_id_ConnectionUriSanLocalCertificate = 36,
  envoy_dynamic_module_type_attribute_id_ConnectionUriSanPeerCertificate = 37,
  envoy_dynamic_module_type_attribute_id_ConnectionSha256PeerCertificateDigest = 38,
  envoy_dynamic_module_type_attribute_id_XdsRouteName = 61,
  envoy_dynamic_module_type_attribute_id_XdsVirtualClusterName = 69,
} envoy_dynamic_module_type_attribute_id;

/* Results of the metrics callbacks. */
typedef enum envoy_dynamic_module_type_metrics_result {
  envoy_dynamic_module_type_metrics_result_Success = 0,
  envoy_dynamic_module_type_metrics_result_MetricNotFound = 1,
  envoy_dynamic_module_type_metrics_result_InvalidLabels = 2,
  envoy_dynamic_module_type_metrics_result_Frozen = 3,
} envoy_dynamic_module_type_metrics_result;

/* A one-shot HTTP callout: whether it started, and how it ended. */
typedef enum envoy_dynamic_module_type_http_callout_init_result {
  envoy_dynamic_module_type_http_callout_init_result_Success = 0,
  envoy_dynamic_module_type_http_callout_init_result_MissingRequiredHeaders = 1,
  envoy_dynamic_module_type_http_callout_init_result_ClusterNotFound = 2,
  envoy_dynamic_module_type_http_callout_init_result_DuplicateCalloutId = 3,
  envoy_dynamic_module_type_http_callout_init_result_CannotCreateRequest = 4,
} envoy_dynamic_module_type_http_callout_init_result;

/* Hook results; the numbering follows Envoy's Filter{Headers,Data,Trailers}Status. */
typedef enum envoy_dynamic_module_type_on_http_filter_headers_status {
  envoy_dynamic_module_type_on_http_filter_headers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_headers_status_StopIteration = 1,
} envoy_dynamic_module_type_on_http_filter_headers_status;

typedef enum envoy_dynamic_module_type_on_http_filter_body_status {
  envoy_dynamic_module_type_on_http_filter_body_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndBuffer = 1,
  envoy_dynamic_module_type_on_http_filter_body_status_StopIterationAndWatermark = 2,
  envoy_dynamic_module_type_on_http_filter_body_status_StopIterationNoBuffer = 3,
} envoy_dynamic_module_type_on_http_filter_body_status;

typedef enum envoy_dynamic_module_type_on_http_filter_trailers_status {
  envoy_dynamic_module_type_on_http_filter_trailers_status_Continue = 0,
  envoy_dynamic_module_type_on_http_filter_trailers_status_StopIteration = 1,
} envoy_dynamic_module_type_on_http_filter_trailers_status;

/* 0 Success, 1 Reset, 2 ExceedResponseBufferLimit. */
typedef uint32_t envoy_dynamic_module_type_http_callout_result;
/* Only passed through by hooks we must export but do not use. */
typedef uint32_t envoy_dynamic_module_type_http_stream_reset_reason;

/* ---------------------------------------------------------------- hooks -- */
/* Every one of these must be exported, even when unused, or Envoy refuses
 * the module. */

const char *envoy_dynamic_module_on_program_init(void);

envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config);
void envoy_dynamic_module_on_http_filter_config_destroy(
    envoy_dynamic_module_type_http_filter_config_module_ptr config);

/* A route's typed_per_filter_config for the module (DynamicModuleFilterPerRoute):
 * `name` is its per_route_config_name, `config` its filter_config. NULL
 * rejects the route configuration. Optional hooks. */
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_on_http_filter_per_route_config_new(envoy_dynamic_module_type_envoy_buffer name,
                                                        envoy_dynamic_module_type_envoy_buffer config);
void envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr config);

/* Called on a worker thread for each stream. */
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr config,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
envoy_dynamic_module_type_on_http_filter_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_request_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_request_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter);
envoy_dynamic_module_type_on_http_filter_headers_status envoy_dynamic_module_on_http_filter_response_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_body_status envoy_dynamic_module_on_http_filter_response_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, bool end_of_stream);
envoy_dynamic_module_type_on_http_filter_trailers_status envoy_dynamic_module_on_http_filter_response_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter);
/* stream_complete comes just before destroy; no scheduled event after destroy. */
void envoy_dynamic_module_on_http_filter_stream_complete(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter);
void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr filter);
/* Runs on the stream's worker thread after scheduler_commit(event_id). */
void envoy_dynamic_module_on_http_filter_scheduled(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t event_id);

/* Required, unused: HTTP callouts and streams, downstream write watermarks. */
void envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t callout_id,
    envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer *body_chunks, size_t body_chunks_size);
void envoy_dynamic_module_on_http_filter_http_stream_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t stream_id,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size, bool end_stream);
void envoy_dynamic_module_on_http_filter_http_stream_data(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t stream_id,
    const envoy_dynamic_module_type_envoy_buffer *data, size_t data_count, bool end_stream);
void envoy_dynamic_module_on_http_filter_http_stream_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t stream_id,
    envoy_dynamic_module_type_envoy_http_header *trailers, size_t trailers_size);
void envoy_dynamic_module_on_http_filter_http_stream_complete(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t stream_id);
void envoy_dynamic_module_on_http_filter_http_stream_reset(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter, uint64_t stream_id,
    envoy_dynamic_module_type_http_stream_reset_reason reason);
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter);
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_filter_module_ptr filter);

/* ------------------------------------------------------------ callbacks -- */

void envoy_dynamic_module_callback_log(envoy_dynamic_module_type_log_level level,
                                       envoy_dynamic_module_type_module_buffer message);
bool envoy_dynamic_module_callback_log_enabled(envoy_dynamic_module_type_log_level level);

/* Headers. get_header returns value `index` of `key` and the number of values
 * in *count (count may be NULL). set_header with a NULL value removes `key`. */
bool envoy_dynamic_module_callback_http_get_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_envoy_buffer *value, size_t index, size_t *count);
size_t envoy_dynamic_module_callback_http_get_headers_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type);
bool envoy_dynamic_module_callback_http_get_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type,
    envoy_dynamic_module_type_envoy_http_header *headers);
bool envoy_dynamic_module_callback_http_add_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
bool envoy_dynamic_module_callback_http_set_header(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_header_type header_type, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);

/* Local reply; `details` is the response code details (may be empty). */
void envoy_dynamic_module_callback_http_send_response(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, uint32_t status_code,
    envoy_dynamic_module_type_module_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_module_buffer body, envoy_dynamic_module_type_module_buffer details);

/* Bodies. */
size_t envoy_dynamic_module_callback_http_get_body_chunks_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type);
bool envoy_dynamic_module_callback_http_get_body_chunks(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type, envoy_dynamic_module_type_envoy_buffer *chunks);
size_t envoy_dynamic_module_callback_http_get_body_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type);
/* The stream's buffer limit in bytes (0: none). */
uint64_t envoy_dynamic_module_callback_http_get_buffer_limit(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
bool envoy_dynamic_module_callback_http_append_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type, envoy_dynamic_module_type_module_buffer data);
bool envoy_dynamic_module_callback_http_drain_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_http_body_type body_type, size_t bytes);

/* Metadata: setters write the stream's dynamic metadata; getters read `source`. */
void envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, double value);
void envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
void envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, bool value);
bool envoy_dynamic_module_callback_http_get_metadata_number(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, double *value);
bool envoy_dynamic_module_callback_http_get_metadata_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, envoy_dynamic_module_type_envoy_buffer *value);
bool envoy_dynamic_module_callback_http_get_metadata_bool(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer key, bool *value);
size_t envoy_dynamic_module_callback_http_get_metadata_keys_count(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns);
bool envoy_dynamic_module_callback_http_get_metadata_keys(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_metadata_source source, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_envoy_buffer *keys);

/* Lists under a metadata key (element `index`), and the namespaces of a source. */
bool envoy_dynamic_module_callback_http_get_metadata_list_size(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, size_t *result);
bool envoy_dynamic_module_callback_http_get_metadata_list_number(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, size_t index, double *result);
bool envoy_dynamic_module_callback_http_get_metadata_list_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, size_t index,
    envoy_dynamic_module_type_envoy_buffer *result);
bool envoy_dynamic_module_callback_http_get_metadata_list_bool(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source,
    envoy_dynamic_module_type_module_buffer ns, envoy_dynamic_module_type_module_buffer key, size_t index, bool *result);
size_t envoy_dynamic_module_callback_http_get_metadata_namespaces_count(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source);
bool envoy_dynamic_module_callback_http_get_metadata_namespaces(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_metadata_source source,
    envoy_dynamic_module_type_envoy_buffer *result);
/* Merges a serialized google.protobuf.Struct (wire bytes) into the namespace. */
void envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer ns,
    envoy_dynamic_module_type_module_buffer serialized_struct);

/* Filter state: bytes stored as a string accessor, or as the object that the
 * factory registered for the key makes of them; the typed getter reads any
 * object as its serialized string. */
bool envoy_dynamic_module_callback_http_set_filter_state_bytes(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
bool envoy_dynamic_module_callback_http_set_filter_state_typed(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_module_buffer value);
bool envoy_dynamic_module_callback_http_get_filter_state_typed(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer key,
    envoy_dynamic_module_type_envoy_buffer *result);

/* Metrics: defined on the config during config_new only (named
 * "<metrics_namespace>.<name>", labels become tags), updated per stream. */
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_config_define_counter(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy_ptr, envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer *label_names, size_t label_names_length, size_t *counter_id);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_config_define_gauge(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy_ptr, envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer *label_names, size_t label_names_length, size_t *gauge_id);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_config_define_histogram(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr config_envoy_ptr, envoy_dynamic_module_type_module_buffer name,
    envoy_dynamic_module_type_module_buffer *label_names, size_t label_names_length, size_t *histogram_id);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_increment_counter(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer *label_values, size_t label_values_length, uint64_t value);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_increment_gauge(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer *label_values, size_t label_values_length, uint64_t value);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_decrement_gauge(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer *label_values, size_t label_values_length, uint64_t value);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_set_gauge(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer *label_values, size_t label_values_length, uint64_t value);
envoy_dynamic_module_type_metrics_result envoy_dynamic_module_callback_http_filter_record_histogram_value(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, size_t id,
    envoy_dynamic_module_type_module_buffer *label_values, size_t label_values_length, uint64_t value);

/* Routing. */
void envoy_dynamic_module_callback_http_clear_route_cache(envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
bool envoy_dynamic_module_callback_http_set_upstream_override_host(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, envoy_dynamic_module_type_module_buffer host,
    bool strict);

/* A one-shot HTTP callout; Envoy writes its id and later calls
 * on_http_filter_http_callout_done with it (never after the filter's destroy). */
envoy_dynamic_module_type_http_callout_init_result envoy_dynamic_module_callback_http_filter_http_callout(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, uint64_t *callout_id_out,
    envoy_dynamic_module_type_module_buffer cluster_name, envoy_dynamic_module_type_module_http_header *headers,
    size_t headers_size, envoy_dynamic_module_type_module_buffer body, uint64_t timeout_milliseconds);

/* Stream info. */
bool envoy_dynamic_module_callback_http_filter_get_attribute_bool(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_attribute_id attribute_id, bool *result);
bool envoy_dynamic_module_callback_http_filter_get_attribute_string(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_attribute_id attribute_id, envoy_dynamic_module_type_envoy_buffer *value);
/* The downstream peer as "ip:port", before any XFF-based rewriting. */
bool envoy_dynamic_module_callback_http_get_downstream_direct_remote_address(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer *address);

/* Reset the stream (reason 0 = local reset); used when a panic leaves no
 * other safe way out on the response path. */
void envoy_dynamic_module_callback_http_filter_reset_stream(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr, uint32_t reason,
    envoy_dynamic_module_type_module_buffer details);

/* Resume a stream stopped by a hook. */
void envoy_dynamic_module_callback_http_filter_continue_decoding(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_http_filter_continue_encoding(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);

/* The most specific per-route config (route, then virtual host, then route
 * configuration) of the stream's route, as per_route_config_new returned it;
 * NULL if none. */
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr
envoy_dynamic_module_callback_get_most_specific_route_config(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);

/* Dispatcher post. scheduler_new on the worker thread (during a hook); commit
 * from any thread; delete exactly once, from any thread. Events committed after
 * the filter is destroyed are dropped by Envoy. */
envoy_dynamic_module_type_http_filter_scheduler_module_ptr envoy_dynamic_module_callback_http_filter_scheduler_new(
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr);
void envoy_dynamic_module_callback_http_filter_scheduler_commit(
    envoy_dynamic_module_type_http_filter_scheduler_module_ptr scheduler, uint64_t event_id);
void envoy_dynamic_module_callback_http_filter_scheduler_delete(
    envoy_dynamic_module_type_http_filter_scheduler_module_ptr scheduler);
