//! Shared helpers for the simulator's tests: reading streams without hanging, and short
//! views of objects and recorded events. Starting a simulator and its client is
//! `Simulator::start_local`.
#![allow(dead_code)]

use futures::{Stream, StreamExt};
use serde_json::Value;
use sim::{Resource, Simulator};
use std::time::Duration;

/// The next item of a stream, failing the test (rather than hanging) if none comes.
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("no stream item within 20s")
        .expect("stream ended")
}

pub fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

pub fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

pub fn owner_kinds(v: &Value) -> Vec<String> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn count(sim: &Simulator, resource: Resource, ns: &str) -> usize {
    sim.list(resource, Some(ns)).len()
}

/// `TYPE Kind name` for each event the simulator recorded after resourceVersion `after`.
pub fn events_after(sim: &Simulator, after: u64) -> Vec<String> {
    sim.events()
        .into_iter()
        .filter(|e| e.resource_version > after)
        .map(|e| format!("{} {} {}", e.event_type, e.resource.kind(), e.name))
        .collect()
}
