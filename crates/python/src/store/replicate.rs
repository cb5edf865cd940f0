//! `ReplicateConfig` and `SoftPinAction`: per-put placement options with the
//! reference's attribute names and type checks (counts and TTLs are
//! non-negative integers; anything else raises `TypeError`, as there).

use mooncake_store::ReplicateConfig;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// What a put does to the object's soft pin.
#[pyclass(eq, eq_int, name = "SoftPinAction", module = "mooncake.store")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum PySoftPinAction {
    /// Keep whatever the object had (new objects: not pinned).
    PRESERVE = 0,
    /// Soft-pin the object.
    ENABLE = 1,
    /// Remove the soft pin.
    DISABLE = 2,
}

/// What an object holds (`ReplicateConfig.data_type`); recorded, not acted on.
#[pyclass(eq, eq_int, name = "ObjectDataType", module = "mooncake.store")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
pub enum PyObjectDataType {
    UNKNOWN = 0,
    KVCACHE = 1,
    TENSOR = 2,
    WEIGHT = 3,
    SAMPLE = 4,
    ACTIVATION = 5,
    GRADIENT = 6,
    OPTIMIZER_STATE = 7,
    METADATA = 8,
    GENERAL = 9,
}

/// Placement options of a put (`config=` argument).
#[pyclass(name = "ReplicateConfig", module = "mooncake.store")]
#[derive(Clone, Debug)]
pub struct PyReplicateConfig {
    replica_num: u64,
    soft_pin_action: PySoftPinAction,
    soft_pin_ttl_ms: Option<u64>,
    with_hard_pin: bool,
    preferred_segment: String,
    preferred_segments: Vec<String>,
    prefer_alloc_in_same_node: bool,
    /// The reference's NVMe-oF / DFS tiers and placement groups: kept and
    /// shown, not acted on (this store has memory replicas only).
    nof_replica_num: u64,
    dfs_replica_num: u64,
    preferred_nof_segments: Vec<String>,
    group_ids: Option<Vec<String>>,
    data_type: PyObjectDataType,
}

impl Default for PyReplicateConfig {
    fn default() -> Self {
        PyReplicateConfig {
            replica_num: 1,
            soft_pin_action: PySoftPinAction::PRESERVE,
            soft_pin_ttl_ms: None,
            with_hard_pin: false,
            preferred_segment: String::new(),
            preferred_segments: Vec::new(),
            prefer_alloc_in_same_node: false,
            nof_replica_num: 0,
            dfs_replica_num: 0,
            preferred_nof_segments: Vec::new(),
            group_ids: None,
            data_type: PyObjectDataType::UNKNOWN,
        }
    }
}

/// A non-negative Python int (bools count, as in the reference); TypeError
/// for anything else.
fn non_negative_int(v: &Bound<'_, PyAny>, name: &str) -> PyResult<u64> {
    let bad = || PyTypeError::new_err(format!("{name} must be a non-negative integer, got {v}"));
    if v.is_instance_of::<PyBool>() {
        return Ok(u64::from(v.extract::<bool>()?));
    }
    if !v.is_instance_of::<pyo3::types::PyInt>() {
        return Err(bad());
    }
    v.extract::<u64>().map_err(|_| bad())
}

fn strict_bool(v: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    if let Ok(b) = v.downcast::<PyBool>() {
        return Ok(b.is_true());
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return Ok(v.extract::<i64>()? != 0);
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a bool, got {v}"
    )))
}

impl PyReplicateConfig {
    /// The store client's form: the master applies the soft-pin action, the
    /// per-put soft-pin TTL (None: its `default_kv_soft_pin_ttl`) and the hard pin.
    #[allow(clippy::needless_update)] // the store's struct may grow fields
    pub fn to_store(&self) -> ReplicateConfig {
        let mut preferred = self.preferred_segments.clone();
        if !self.preferred_segment.is_empty() && !preferred.contains(&self.preferred_segment) {
            preferred.insert(0, self.preferred_segment.clone());
        }
        ReplicateConfig {
            replica_num: u32::try_from(self.replica_num.max(1)).unwrap_or(u32::MAX),
            with_soft_pin: self.soft_pin_action == PySoftPinAction::ENABLE,
            preserve_soft_pin: self.soft_pin_action == PySoftPinAction::PRESERVE,
            soft_pin_ttl_ms: self.soft_pin_ttl_ms.unwrap_or(0),
            with_hard_pin: self.with_hard_pin,
            preferred_segments: preferred,
            ..ReplicateConfig::default()
        }
    }
}

#[pymethods]
impl PyReplicateConfig {
    #[new]
    #[pyo3(signature = (replica_num = None, with_soft_pin = None, preferred_segment = None))]
    fn new(
        replica_num: Option<&Bound<'_, PyAny>>,
        with_soft_pin: Option<&Bound<'_, PyAny>>,
        preferred_segment: Option<String>,
    ) -> PyResult<Self> {
        let mut c = PyReplicateConfig::default();
        if let Some(v) = replica_num {
            c.replica_num = non_negative_int(v, "replica_num")?;
        }
        if let Some(v) = with_soft_pin {
            c.set_with_soft_pin(v)?;
        }
        if let Some(s) = preferred_segment {
            c.preferred_segment = s;
        }
        Ok(c)
    }

    #[getter]
    fn replica_num(&self) -> u64 {
        self.replica_num
    }

    #[setter]
    fn set_replica_num(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.replica_num = non_negative_int(v, "replica_num")?;
        Ok(())
    }

    /// True when the put soft-pins the object (`soft_pin_action == ENABLE`).
    #[getter]
    fn with_soft_pin(&self) -> bool {
        self.soft_pin_action == PySoftPinAction::ENABLE
    }

    #[setter]
    fn set_with_soft_pin(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.soft_pin_action = if strict_bool(v, "with_soft_pin")? {
            PySoftPinAction::ENABLE
        } else {
            PySoftPinAction::PRESERVE
        };
        Ok(())
    }

    #[getter]
    fn soft_pin_action(&self) -> PySoftPinAction {
        self.soft_pin_action
    }

    #[setter]
    fn set_soft_pin_action(&mut self, v: PySoftPinAction) {
        self.soft_pin_action = v;
    }

    /// Soft-pin duration in ms, or None for the master's default.
    #[getter]
    fn soft_pin_ttl_ms(&self) -> Option<u64> {
        self.soft_pin_ttl_ms
    }

    #[setter]
    fn set_soft_pin_ttl_ms(&mut self, v: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.soft_pin_ttl_ms = match v {
            None => None,
            Some(v) if v.is_none() => None,
            Some(v) => Some(non_negative_int(v, "soft_pin_ttl_ms")?),
        };
        Ok(())
    }

    #[getter]
    fn with_hard_pin(&self) -> bool {
        self.with_hard_pin
    }

    #[setter]
    fn set_with_hard_pin(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.with_hard_pin = strict_bool(v, "with_hard_pin")?;
        Ok(())
    }

    /// Segment for the first replica ("host:port"; deprecated form of
    /// `preferred_segments`).
    #[getter]
    fn preferred_segment(&self) -> String {
        self.preferred_segment.clone()
    }

    #[setter]
    fn set_preferred_segment(&mut self, v: String) {
        self.preferred_segment = v;
    }

    #[getter]
    fn preferred_segments(&self) -> Vec<String> {
        self.preferred_segments.clone()
    }

    #[setter]
    fn set_preferred_segments(&mut self, v: Vec<String>) {
        self.preferred_segments = v;
    }

    #[getter]
    fn prefer_alloc_in_same_node(&self) -> bool {
        self.prefer_alloc_in_same_node
    }

    #[setter]
    fn set_prefer_alloc_in_same_node(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.prefer_alloc_in_same_node = strict_bool(v, "prefer_alloc_in_same_node")?;
        Ok(())
    }

    #[getter]
    fn nof_replica_num(&self) -> u64 {
        self.nof_replica_num
    }

    #[setter]
    fn set_nof_replica_num(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.nof_replica_num = non_negative_int(v, "nof_replica_num")?;
        Ok(())
    }

    #[getter]
    fn dfs_replica_num(&self) -> u64 {
        self.dfs_replica_num
    }

    #[setter]
    fn set_dfs_replica_num(&mut self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.dfs_replica_num = non_negative_int(v, "dfs_replica_num")?;
        Ok(())
    }

    #[getter]
    fn preferred_nof_segments(&self) -> Vec<String> {
        self.preferred_nof_segments.clone()
    }

    #[setter]
    fn set_preferred_nof_segments(&mut self, v: Vec<String>) {
        self.preferred_nof_segments = v;
    }

    #[getter]
    fn group_ids(&self) -> Option<Vec<String>> {
        self.group_ids.clone()
    }

    #[setter]
    fn set_group_ids(&mut self, v: Option<Vec<String>>) {
        self.group_ids = v;
    }

    #[getter]
    fn data_type(&self) -> PyObjectDataType {
        self.data_type
    }

    #[setter]
    fn set_data_type(&mut self, v: PyObjectDataType) {
        self.data_type = v;
    }

    fn __str__(&self) -> String {
        let ttl = self
            .soft_pin_ttl_ms
            .map_or_else(|| "default".to_string(), |t| t.to_string());
        format!(
            "ReplicateConfig: {{ replica_num: {}, soft_pin_action: {:?}, soft_pin_ttl_ms: {ttl}, \
             with_hard_pin: {}, preferred_segments: [{}], preferred_segment: {}, \
             prefer_alloc_in_same_node: {} }}",
            self.replica_num,
            self.soft_pin_action,
            u8::from(self.with_hard_pin),
            self.preferred_segments.join(", "),
            self.preferred_segment,
            u8::from(self.prefer_alloc_in_same_node),
        )
    }

    fn __repr__(&self) -> String {
        self.__str__()
    }
}
