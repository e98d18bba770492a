use tract_onnx::prelude::*;
fn main() -> TractResult<()> {
    for path in std::env::args().skip(1) {
        let mut m = tract_onnx::onnx().model_for_path(&path)?;
        m.set_input_fact(0, f32::fact([1, 1, 28, 28]).into())?;
        let m = m.into_optimized()?.into_runnable()?;
        let x = Tensor::zero::<f32>(&[1, 1, 28, 28])?;
        let mut st = m.spawn()?;
        for _ in 0..100 { st.run(tvec![x.clone().into_tvalue()])?; }
        let t = std::time::Instant::now();
        for _ in 0..2000 { st.run(tvec![x.clone().into_tvalue()])?; }
        println!("{path}: {:.1} µs", t.elapsed().as_secs_f64() * 1e6 / 2000.0);
        for n in m.model().nodes() { println!("   {} {}", n.op().name(), n.op().info().unwrap_or_default().join("; ").chars().take(150).collect::<String>()); }
    }
    Ok(())
}
