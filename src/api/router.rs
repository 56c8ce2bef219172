//! The tonic router: ContextService, IntegrityService, ClusterService, health (grpc.health.v1) and
//! reflection (v1, v1alpha).

use super::{ClusterApi, ContextApi, IntegrityApi};
use crate::actors::Shared;
use crate::proto::cluster_service_server::ClusterServiceServer;
use crate::proto::context_service_server::ContextServiceServer;
use crate::proto::integrity_service_server::IntegrityServiceServer;
use std::sync::Arc;
use tonic::transport::server::Router;

/// Room for the largest append (payload plus up to 64 metadata pairs of 1 KiB each, ids)
/// above the configured payload maximum.
const APPEND_OVERHEAD_BYTES: usize = 1 << 20;

pub fn router(shared: Arc<Shared>) -> Router {
    let max_in = shared
        .limits
        .payload_bytes_max
        .saturating_add(APPEND_OVERHEAD_BYTES)
        .max(shared.snapshot_bytes_max);
    let max_out = shared.snapshot_bytes_max.max(max_in);
    let context = ContextServiceServer::new(ContextApi::new(shared.clone()))
        .max_decoding_message_size(max_in)
        .max_encoding_message_size(max_out);
    // Integrity requests and answers are small (an audit path is at most 64 hashes).
    let integrity = IntegrityServiceServer::new(IntegrityApi::new(shared.clone()));
    let cluster = ClusterServiceServer::new(ClusterApi::new(shared.clone()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Serving from the moment the router exists: the tree below is already started.
    tokio::spawn(async move {
        health_reporter
            .set_serving::<ContextServiceServer<ContextApi>>()
            .await;
        health_reporter
            .set_serving::<IntegrityServiceServer<IntegrityApi>>()
            .await;
        health_reporter
            .set_serving::<ClusterServiceServer<ClusterApi>>()
            .await;
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(context)
        .add_service(integrity)
        .add_service(cluster)
}
