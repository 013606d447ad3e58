// Operand tables for the inline PTX of wgmma.mma_async with f32 accumulators, for every N = 8c (c = 1..32 chunks
// of 4 accumulator registers). The accumulators are operands %0 .. %(4c - 1); the operands after them (A registers
// or descriptors, B descriptor, scale-d) are numbered from 4c on:
//   Q35_WG_REGS_c   the PTX register list "%0, %1, ..., %(4c-1)"
//   Q35_WG_OUT_c    the constraints "+f"(d[0]), ..., "+f"(d[4c-1])
//   Q35_WG_NEXT_c   ("%4c", ..., "%(4c+5)"): the next six operand numbers, picked by Q35_WG_ARG(k, Q35_WG_NEXT_c)
// Only q35/ptx/wgmma.cuh includes it.
#pragma once

#define Q35_WG_ARG(k, list) Q35_WG_ARG_##k list
#define Q35_WG_ARG_0(a, b, c, d, e, f) a
#define Q35_WG_ARG_1(a, b, c, d, e, f) b
#define Q35_WG_ARG_2(a, b, c, d, e, f) c
#define Q35_WG_ARG_3(a, b, c, d, e, f) d
#define Q35_WG_ARG_4(a, b, c, d, e, f) e
#define Q35_WG_ARG_5(a, b, c, d, e, f) f
#define Q35_WG_OUT4(c) "+f"(d[4 * (c)]), "+f"(d[4 * (c) + 1]), "+f"(d[4 * (c) + 2]), "+f"(d[4 * (c) + 3])

#define Q35_WG_REGS_1 "%0, %1, %2, %3"
#define Q35_WG_REGS_2 Q35_WG_REGS_1 ", %4, %5, %6, %7"
#define Q35_WG_REGS_3 Q35_WG_REGS_2 ", %8, %9, %10, %11"
#define Q35_WG_REGS_4 Q35_WG_REGS_3 ", %12, %13, %14, %15"
#define Q35_WG_REGS_5 Q35_WG_REGS_4 ", %16, %17, %18, %19"
#define Q35_WG_REGS_6 Q35_WG_REGS_5 ", %20, %21, %22, %23"
#define Q35_WG_REGS_7 Q35_WG_REGS_6 ", %24, %25, %26, %27"
#define Q35_WG_REGS_8 Q35_WG_REGS_7 ", %28, %29, %30, %31"
#define Q35_WG_REGS_9 Q35_WG_REGS_8 ", %32, %33, %34, %35"
#define Q35_WG_REGS_10 Q35_WG_REGS_9 ", %36, %37, %38, %39"
#define Q35_WG_REGS_11 Q35_WG_REGS_10 ", %40, %41, %42, %43"
#define Q35_WG_REGS_12 Q35_WG_REGS_11 ", %44, %45, %46, %47"
#define Q35_WG_REGS_13 Q35_WG_REGS_12 ", %48, %49, %50, %51"
#define Q35_WG_REGS_14 Q35_WG_REGS_13 ", %52, %53, %54, %55"
#define Q35_WG_REGS_15 Q35_WG_REGS_14 ", %56, %57, %58, %59"
#define Q35_WG_REGS_16 Q35_WG_REGS_15 ", %60, %61, %62, %63"
#define Q35_WG_REGS_17 Q35_WG_REGS_16 ", %64, %65, %66, %67"
#define Q35_WG_REGS_18 Q35_WG_REGS_17 ", %68, %69, %70, %71"
#define Q35_WG_REGS_19 Q35_WG_REGS_18 ", %72, %73, %74, %75"
#define Q35_WG_REGS_20 Q35_WG_REGS_19 ", %76, %77, %78, %79"
#define Q35_WG_REGS_21 Q35_WG_REGS_20 ", %80, %81, %82, %83"
#define Q35_WG_REGS_22 Q35_WG_REGS_21 ", %84, %85, %86, %87"
#define Q35_WG_REGS_23 Q35_WG_REGS_22 ", %88, %89, %90, %91"
#define Q35_WG_REGS_24 Q35_WG_REGS_23 ", %92, %93, %94, %95"
#define Q35_WG_REGS_25 Q35_WG_REGS_24 ", %96, %97, %98, %99"
#define Q35_WG_REGS_26 Q35_WG_REGS_25 ", %100, %101, %102, %103"
#define Q35_WG_REGS_27 Q35_WG_REGS_26 ", %104, %105, %106, %107"
#define Q35_WG_REGS_28 Q35_WG_REGS_27 ", %108, %109, %110, %111"
#define Q35_WG_REGS_29 Q35_WG_REGS_28 ", %112, %113, %114, %115"
#define Q35_WG_REGS_30 Q35_WG_REGS_29 ", %116, %117, %118, %119"
#define Q35_WG_REGS_31 Q35_WG_REGS_30 ", %120, %121, %122, %123"
#define Q35_WG_REGS_32 Q35_WG_REGS_31 ", %124, %125, %126, %127"

#define Q35_WG_OUT_1 Q35_WG_OUT4(0)
#define Q35_WG_OUT_2 Q35_WG_OUT_1, Q35_WG_OUT4(1)
#define Q35_WG_OUT_3 Q35_WG_OUT_2, Q35_WG_OUT4(2)
#define Q35_WG_OUT_4 Q35_WG_OUT_3, Q35_WG_OUT4(3)
#define Q35_WG_OUT_5 Q35_WG_OUT_4, Q35_WG_OUT4(4)
#define Q35_WG_OUT_6 Q35_WG_OUT_5, Q35_WG_OUT4(5)
#define Q35_WG_OUT_7 Q35_WG_OUT_6, Q35_WG_OUT4(6)
#define Q35_WG_OUT_8 Q35_WG_OUT_7, Q35_WG_OUT4(7)
#define Q35_WG_OUT_9 Q35_WG_OUT_8, Q35_WG_OUT4(8)
#define Q35_WG_OUT_10 Q35_WG_OUT_9, Q35_WG_OUT4(9)
#define Q35_WG_OUT_11 Q35_WG_OUT_10, Q35_WG_OUT4(10)
#define Q35_WG_OUT_12 Q35_WG_OUT_11, Q35_WG_OUT4(11)
#define Q35_WG_OUT_13 Q35_WG_OUT_12, Q35_WG_OUT4(12)
#define Q35_WG_OUT_14 Q35_WG_OUT_13, Q35_WG_OUT4(13)
#define Q35_WG_OUT_15 Q35_WG_OUT_14, Q35_WG_OUT4(14)
#define Q35_WG_OUT_16 Q35_WG_OUT_15, Q35_WG_OUT4(15)
#define Q35_WG_OUT_17 Q35_WG_OUT_16, Q35_WG_OUT4(16)
#define Q35_WG_OUT_18 Q35_WG_OUT_17, Q35_WG_OUT4(17)
#define Q35_WG_OUT_19 Q35_WG_OUT_18, Q35_WG_OUT4(18)
#define Q35_WG_OUT_20 Q35_WG_OUT_19, Q35_WG_OUT4(19)
#define Q35_WG_OUT_21 Q35_WG_OUT_20, Q35_WG_OUT4(20)
#define Q35_WG_OUT_22 Q35_WG_OUT_21, Q35_WG_OUT4(21)
#define Q35_WG_OUT_23 Q35_WG_OUT_22, Q35_WG_OUT4(22)
#define Q35_WG_OUT_24 Q35_WG_OUT_23, Q35_WG_OUT4(23)
#define Q35_WG_OUT_25 Q35_WG_OUT_24, Q35_WG_OUT4(24)
#define Q35_WG_OUT_26 Q35_WG_OUT_25, Q35_WG_OUT4(25)
#define Q35_WG_OUT_27 Q35_WG_OUT_26, Q35_WG_OUT4(26)
#define Q35_WG_OUT_28 Q35_WG_OUT_27, Q35_WG_OUT4(27)
#define Q35_WG_OUT_29 Q35_WG_OUT_28, Q35_WG_OUT4(28)
#define Q35_WG_OUT_30 Q35_WG_OUT_29, Q35_WG_OUT4(29)
#define Q35_WG_OUT_31 Q35_WG_OUT_30, Q35_WG_OUT4(30)
#define Q35_WG_OUT_32 Q35_WG_OUT_31, Q35_WG_OUT4(31)

#define Q35_WG_NEXT_1 ("%4", "%5", "%6", "%7", "%8", "%9")
#define Q35_WG_NEXT_2 ("%8", "%9", "%10", "%11", "%12", "%13")
#define Q35_WG_NEXT_3 ("%12", "%13", "%14", "%15", "%16", "%17")
#define Q35_WG_NEXT_4 ("%16", "%17", "%18", "%19", "%20", "%21")
#define Q35_WG_NEXT_5 ("%20", "%21", "%22", "%23", "%24", "%25")
#define Q35_WG_NEXT_6 ("%24", "%25", "%26", "%27", "%28", "%29")
#define Q35_WG_NEXT_7 ("%28", "%29", "%30", "%31", "%32", "%33")
#define Q35_WG_NEXT_8 ("%32", "%33", "%34", "%35", "%36", "%37")
#define Q35_WG_NEXT_9 ("%36", "%37", "%38", "%39", "%40", "%41")
#define Q35_WG_NEXT_10 ("%40", "%41", "%42", "%43", "%44", "%45")
#define Q35_WG_NEXT_11 ("%44", "%45", "%46", "%47", "%48", "%49")
#define Q35_WG_NEXT_12 ("%48", "%49", "%50", "%51", "%52", "%53")
#define Q35_WG_NEXT_13 ("%52", "%53", "%54", "%55", "%56", "%57")
#define Q35_WG_NEXT_14 ("%56", "%57", "%58", "%59", "%60", "%61")
#define Q35_WG_NEXT_15 ("%60", "%61", "%62", "%63", "%64", "%65")
#define Q35_WG_NEXT_16 ("%64", "%65", "%66", "%67", "%68", "%69")
#define Q35_WG_NEXT_17 ("%68", "%69", "%70", "%71", "%72", "%73")
#define Q35_WG_NEXT_18 ("%72", "%73", "%74", "%75", "%76", "%77")
#define Q35_WG_NEXT_19 ("%76", "%77", "%78", "%79", "%80", "%81")
#define Q35_WG_NEXT_20 ("%80", "%81", "%82", "%83", "%84", "%85")
#define Q35_WG_NEXT_21 ("%84", "%85", "%86", "%87", "%88", "%89")
#define Q35_WG_NEXT_22 ("%88", "%89", "%90", "%91", "%92", "%93")
#define Q35_WG_NEXT_23 ("%92", "%93", "%94", "%95", "%96", "%97")
#define Q35_WG_NEXT_24 ("%96", "%97", "%98", "%99", "%100", "%101")
#define Q35_WG_NEXT_25 ("%100", "%101", "%102", "%103", "%104", "%105")
#define Q35_WG_NEXT_26 ("%104", "%105", "%106", "%107", "%108", "%109")
#define Q35_WG_NEXT_27 ("%108", "%109", "%110", "%111", "%112", "%113")
#define Q35_WG_NEXT_28 ("%112", "%113", "%114", "%115", "%116", "%117")
#define Q35_WG_NEXT_29 ("%116", "%117", "%118", "%119", "%120", "%121")
#define Q35_WG_NEXT_30 ("%120", "%121", "%122", "%123", "%124", "%125")
#define Q35_WG_NEXT_31 ("%124", "%125", "%126", "%127", "%128", "%129")
#define Q35_WG_NEXT_32 ("%128", "%129", "%130", "%131", "%132", "%133")
