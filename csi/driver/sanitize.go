package driver

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// stripped replaces every secret value in a logged request.
const stripped = "***stripped***"

// stripSecrets returns msg as JSON with the value of every field the CSI
// spec marks csi_secret replaced by "***stripped***", at any depth, as
// csi-lib-utils' protosanitizer does. Anything that is not a protobuf
// message is printed as a placeholder, never as is.
func stripSecrets(msg any) string {
	m, ok := msg.(proto.Message)
	if !ok || m == nil {
		return "<not a protobuf message>"
	}
	c := proto.Clone(m)
	strip(c.ProtoReflect())
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return "<unprintable: " + err.Error() + ">"
	}
	return string(b)
}

func strip(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if isSecret(fd) {
			switch {
			case fd.IsMap():
				mp := m.Mutable(fd).Map()
				var keys []protoreflect.MapKey
				mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
					keys = append(keys, k)
					return true
				})
				for _, k := range keys {
					mp.Set(k, protoreflect.ValueOfString(stripped))
				}
			case fd.Kind() == protoreflect.StringKind && !fd.IsList():
				m.Set(fd, protoreflect.ValueOfString(stripped))
			default:
				m.Clear(fd)
			}
			return true
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					strip(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := range l.Len() {
					strip(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			strip(v.Message())
		}
		return true
	})
}

func isSecret(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	b, _ := proto.GetExtension(opts, csi.E_CsiSecret).(bool)
	return b
}
