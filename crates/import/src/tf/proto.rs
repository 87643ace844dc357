//! The subset of TensorFlow's `graph.proto`, `node_def.proto`, `attr_value.proto`,
//! `tensor.proto` and `tensor_shape.proto` that the importer reads.
//!
//! Field numbers are TensorFlow's; every field we do not need is simply left out, and prost
//! skips it on decoding (`versions`, `library`, `device`, function attributes, ...). Enum
//! fields (`DataType`) are kept as raw `i32` so that an unknown type decodes and is reported
//! by name of the node instead of failing the whole file.
//!
//! The structs are public so that tests (ours and other crates') can build GraphDefs in code.

use std::collections::BTreeMap;

/// `DataType` values that appear in the supported models.
pub const DT_FLOAT: i32 = 1;
pub const DT_INT32: i32 = 3;
pub const DT_UINT8: i32 = 4;
pub const DT_QUINT8: i32 = 12;

/// `tensorflow.GraphDef`: the nodes of one flat graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
}

/// `tensorflow.NodeDef`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeDef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub op: String,
    /// `"node"`, `"node:1"` (output index) or `"^node"` (control dependency).
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    #[prost(btree_map = "string, message", tag = "5")]
    pub attr: BTreeMap<String, AttrValue>,
}

/// `tensorflow.AttrValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrValue {
    #[prost(oneof = "attr_value::Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<attr_value::Value>,
}

pub mod attr_value {
    /// The `value` oneof of `AttrValue` (without `placeholder` and `func`).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        List(super::ListValue),
        #[prost(bytes = "vec", tag = "2")]
        S(Vec<u8>),
        #[prost(int64, tag = "3")]
        I(i64),
        #[prost(float, tag = "4")]
        F(f32),
        #[prost(bool, tag = "5")]
        B(bool),
        #[prost(int32, tag = "6")]
        Type(i32),
        #[prost(message, tag = "7")]
        Shape(super::TensorShapeProto),
        #[prost(message, tag = "8")]
        Tensor(super::TensorProto),
    }
}

/// `tensorflow.AttrValue.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub s: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "3")]
    pub i: Vec<i64>,
    #[prost(float, repeated, tag = "4")]
    pub f: Vec<f32>,
    #[prost(bool, repeated, tag = "5")]
    pub b: Vec<bool>,
    #[prost(int32, repeated, tag = "6")]
    pub r#type: Vec<i32>,
    #[prost(message, repeated, tag = "7")]
    pub shape: Vec<TensorShapeProto>,
}

/// `tensorflow.TensorProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Little-endian packed values of the whole tensor, when present.
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// Also holds the values of 8- and 16-bit integer types.
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

pub mod tensor_shape_proto {
    /// One dimension; `-1` means unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }
}

impl AttrValue {
    pub fn s(v: &str) -> Self {
        AttrValue {
            value: Some(attr_value::Value::S(v.as_bytes().to_vec())),
        }
    }
    pub fn i(v: i64) -> Self {
        AttrValue {
            value: Some(attr_value::Value::I(v)),
        }
    }
    pub fn dtype(v: i32) -> Self {
        AttrValue {
            value: Some(attr_value::Value::Type(v)),
        }
    }
    pub fn ints(v: &[i64]) -> Self {
        AttrValue {
            value: Some(attr_value::Value::List(ListValue {
                i: v.to_vec(),
                ..ListValue::default()
            })),
        }
    }
    pub fn tensor(t: TensorProto) -> Self {
        AttrValue {
            value: Some(attr_value::Value::Tensor(t)),
        }
    }
}

impl TensorShapeProto {
    pub fn from_dims(dims: &[i64]) -> Self {
        TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim { size })
                .collect(),
            unknown_rank: false,
        }
    }
}

impl TensorProto {
    /// A float tensor stored as `tensor_content`, as TensorFlow writes arrays.
    pub fn f32_content(shape: &[i64], values: &[f32]) -> Self {
        TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto::from_dims(shape)),
            tensor_content: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        }
    }

    /// A float scalar stored as `float_val`, as TensorFlow writes Python scalars.
    pub fn f32_scalar(v: f32) -> Self {
        TensorProto {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto::default()),
            float_val: vec![v],
            ..TensorProto::default()
        }
    }

    /// An int32 tensor stored as `tensor_content`.
    pub fn i32_content(shape: &[i64], values: &[i32]) -> Self {
        TensorProto {
            dtype: DT_INT32,
            tensor_shape: Some(TensorShapeProto::from_dims(shape)),
            tensor_content: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..TensorProto::default()
        }
    }

    /// A quint8 tensor stored as `tensor_content`, as `quantize_weights` writes it.
    pub fn quint8_content(shape: &[i64], values: &[u8]) -> Self {
        TensorProto {
            dtype: DT_QUINT8,
            tensor_shape: Some(TensorShapeProto::from_dims(shape)),
            tensor_content: values.to_vec(),
            ..TensorProto::default()
        }
    }
}

impl NodeDef {
    /// A node with the given name, op and inputs, without attributes.
    pub fn new(name: &str, op: &str, inputs: &[&str]) -> Self {
        NodeDef {
            name: name.to_string(),
            op: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            attr: BTreeMap::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, key: &str, value: AttrValue) -> Self {
        self.attr.insert(key.to_string(), value);
        self
    }

    /// A `Const` node holding `t`.
    pub fn constant(name: &str, t: TensorProto) -> Self {
        NodeDef::new(name, "Const", &[])
            .with("dtype", AttrValue::dtype(t.dtype))
            .with("value", AttrValue::tensor(t))
    }
}
