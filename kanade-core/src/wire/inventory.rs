//! Inventory reports on `inventory.<pc>.<hw|sw|net>`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Hardware and OS facts of one pc.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
pub struct HwInventory {
    /// The reporting pc.
    pub pc_id: String,
    /// When the facts were collected.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// Host name as the OS reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OS name (`Windows 11 Pro`, `Debian GNU/Linux`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// OS version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Kernel version string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// CPU brand string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// Logical CPU count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u32>,
    /// Installed memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Mounted disks.
    #[serde(default)]
    pub disks: Vec<Disk>,
}

/// One mounted disk.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Mount point or drive letter.
    pub mount: String,
    /// Capacity in bytes.
    #[serde(default)]
    pub total_bytes: u64,
    /// Free space in bytes.
    #[serde(default)]
    pub available_bytes: u64,
}

/// Installed software of one pc.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
pub struct SwInventory {
    /// The reporting pc.
    pub pc_id: String,
    /// When the list was collected.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// Installed packages.
    #[serde(default)]
    pub packages: Vec<SoftwarePackage>,
}

/// One installed package.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct SoftwarePackage {
    /// Package name.
    pub name: String,
    /// Installed version.
    #[serde(default)]
    pub version: String,
    /// Publisher or vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// Network interfaces of one pc.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq, Default)]
pub struct NetInventory {
    /// The reporting pc.
    pub pc_id: String,
    /// When the list was collected.
    #[serde(with = "super::timestamp")]
    #[schemars(with = "DateTime<Utc>")]
    pub at: DateTime<Utc>,
    /// Network interfaces.
    #[serde(default)]
    pub interfaces: Vec<NetInterface>,
}

/// One network interface.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
pub struct NetInterface {
    /// Interface name.
    pub name: String,
    /// Hardware address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Assigned addresses (CIDR notation).
    #[serde(default)]
    pub addresses: Vec<String>,
}
