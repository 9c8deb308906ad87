package dtracesim

import "strings"

// dtype is the type of a D expression: a string, or an integer of some
// width and signedness. Pointers, structs and arrays are outside the subset.
type dtype struct {
	str    bool
	bits   uint8 // 8, 16, 32 or 64 for integers
	signed bool
	name   string // as D names it in diagnostics
}

var (
	tChar   = dtype{bits: 8, signed: true, name: "char"}
	tInt    = dtype{bits: 32, signed: true, name: "int"}
	tUint   = dtype{bits: 32, name: "unsigned int"}
	tLong   = dtype{bits: 64, signed: true, name: "long"}
	tUlong  = dtype{bits: 64, name: "unsigned long"}
	tString = dtype{str: true, name: "string"}
)

// typeNames are the type names a declaration or a cast may use. Multi-word
// C names are parsed into these keys by parseTypeName.
var typeNames = map[string]dtype{
	"char":               tChar,
	"signed char":        tChar,
	"unsigned char":      {bits: 8, name: "unsigned char"},
	"short":              {bits: 16, signed: true, name: "short"},
	"unsigned short":     {bits: 16, name: "unsigned short"},
	"int":                tInt,
	"signed":             tInt,
	"signed int":         tInt,
	"unsigned":           tUint,
	"unsigned int":       tUint,
	"long":               tLong,
	"signed long":        tLong,
	"unsigned long":      tUlong,
	"long long":          {bits: 64, signed: true, name: "long long"},
	"unsigned long long": {bits: 64, name: "unsigned long long"},
	"int8_t":             {bits: 8, signed: true, name: "int8_t"},
	"int16_t":            {bits: 16, signed: true, name: "int16_t"},
	"int32_t":            {bits: 32, signed: true, name: "int32_t"},
	"int64_t":            {bits: 64, signed: true, name: "int64_t"},
	"uint8_t":            {bits: 8, name: "uint8_t"},
	"uint16_t":           {bits: 16, name: "uint16_t"},
	"uint32_t":           {bits: 32, name: "uint32_t"},
	"uint64_t":           {bits: 64, name: "uint64_t"},
	"uint_t":             {bits: 32, name: "uint_t"},
	"ulong_t":            {bits: 64, name: "ulong_t"},
	"uintptr_t":          {bits: 64, name: "uintptr_t"},
	"intptr_t":           {bits: 64, signed: true, name: "intptr_t"},
	"size_t":             {bits: 64, name: "size_t"},
	"ssize_t":            {bits: 64, signed: true, name: "ssize_t"},
	"pid_t":              {bits: 32, signed: true, name: "pid_t"},
	"id_t":               {bits: 32, signed: true, name: "id_t"},
	"string":             tString,
}

// typeWords are the words that can start a type name.
var typeWords = func() map[string]bool {
	m := map[string]bool{}
	for n := range typeNames {
		m[strings.Fields(n)[0]] = true
	}
	return m
}()

// holds reports whether the unsigned value v fits t.
func (t dtype) holds(v uint64) bool {
	if t.signed {
		return v <= uint64(1)<<(t.bits-1)-1
	}
	if t.bits == 64 {
		return true
	}
	return v <= uint64(1)<<t.bits-1
}

// norm reduces v to t's width, sign- or zero-extending it, so that every
// integer value is stored in one canonical int64 form: signed types
// sign-extended, unsigned ones zero-extended (uint64 reinterpreted).
func norm(v int64, t dtype) int64 {
	switch t.bits {
	case 8:
		if t.signed {
			return int64(int8(v))
		}
		return int64(uint8(v))
	case 16:
		if t.signed {
			return int64(int16(v))
		}
		return int64(uint16(v))
	case 32:
		if t.signed {
			return int64(int32(v))
		}
		return int64(uint32(v))
	}
	return v
}

// promote is C's integer promotion: anything narrower than int becomes int.
func promote(t dtype) dtype {
	if t.bits < 32 {
		return tInt
	}
	return t
}

// arith is C's usual arithmetic conversion of two integer types: the wider
// type wins (it can represent every value of the narrower one), and between
// types of one width the unsigned one does.
func arith(a, b dtype) dtype {
	a, b = promote(a), promote(b)
	switch {
	case a.bits > b.bits:
		return a
	case b.bits > a.bits:
		return b
	case !a.signed:
		return a
	}
	return b
}
